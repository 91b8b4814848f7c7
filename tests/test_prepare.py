"""The worker processes' framing and answers (aimx.smtp.prepare) and the worker's loop
(aimx.smtp.prepworker.serve) on in-memory streams."""

import io
import os
import pickle
import struct

import dns.resolver
from twisted.trial.unittest import SynchronousTestCase

from aimx.auth.resolver import Resolver
from aimx.core.authresults import UNAUTHENTICATED
from aimx.core.message import parse_message
from aimx.smtp import prepare, prepworker
from aimx.testing.fakes import message, multipart_message, part


def no_dns() -> Resolver:
    return Resolver(dns.resolver.Resolver(configure=False))


class FramingTests(SynchronousTestCase):
    def test_any_split(self):
        """Frames come out whole however the stream is cut."""
        stream = prepare.frame(("a", b"x" * 1000)) + prepare.frame(7) + prepare.frame(None)
        for size in (1, 3, 4, 5, 999, len(stream)):
            reader = prepare.FrameReader()
            payloads = []
            for at in range(0, len(stream), size):
                payloads += reader.feed(stream[at:at + size])
            self.assertEqual([pickle.loads(p) for p in payloads], [("a", b"x" * 1000), 7, None])

    def test_length_over_the_limit(self):
        """A length over MAX_FRAME is refused before anything is buffered for it."""
        reader = prepare.FrameReader()
        with self.assertRaises(prepare.FrameError):
            reader.feed(struct.pack(">I", prepare.MAX_FRAME + 1))
        self.assertEqual(prepare.FrameReader().feed(struct.pack(">I", prepare.MAX_FRAME)), [])


class _Call:
    def __reduce__(self):
        return (os.getpid, ())


class AnswerTests(SynchronousTestCase):
    def test_prepared_answer_round_trip(self):
        """A real answer -- parsed message with attachments, results -- is rebuilt equal."""
        raw = multipart_message(part("Hello\r\n"), part(
            "JVBERg==", content_type="application/pdf",
            headers=["Content-Disposition: attachment; filename=a.pdf",
                     "Content-Transfer-Encoding: base64"]))
        value = (3, prepare.prepare(raw, peer_ip="192.0.2.1", mail_from="a@example.com",
                                    helo="mx.example.com", resolver=no_dns(), budget=1), None)
        self.assertEqual(value[1][0].attachments[0].filename_raw, "a.pdf")
        self.assertEqual(prepare.load_answer(prepare.frame(value)[4:]), value)

    def test_other_classes_refused(self):
        """A pickle naming any other callable is refused, the callable never called."""
        for value in (_Call(), pickle.loads, (1, _Call(), None)):
            with self.assertRaises(pickle.UnpicklingError):
                prepare.load_answer(pickle.dumps(value))


class ServeTests(SynchronousTestCase):
    def test_answers(self):
        """Each request is answered with its sequence number: the prepared message, or
        the error its preparation raised; end of input ends the loop."""
        raw = message("Hi\r\n", subject="Worked")
        requests = (prepare.frame((1, raw, "192.0.2.1", "a@example.com", "mx.example.com", 1.0))
                    + prepare.frame((2, None, None, None, None, 1.0)))
        out = io.BytesIO()
        prepworker.serve(io.BufferedReader(io.BytesIO(requests)), out, 2, no_dns())
        answers = {a[0]: a for a in map(prepare.load_answer,
                                        prepare.FrameReader().feed(out.getvalue()))}
        parsed, auth, digest = answers[1][1]
        self.assertEqual((parsed, auth, answers[1][2]), (parse_message(raw), UNAUTHENTICATED, None))
        self.assertEqual(len(digest), 64)
        self.assertEqual(answers[2][1], None)
        self.assertTrue(answers[2][2].startswith("TypeError: "), answers[2][2])

    def test_answer_too_big(self):
        """A result whose frame would pass MAX_FRAME is answered as an error, never left
        unanswered."""
        request = prepare.frame((7, message("x" * 5000 + "\r\n"), None, None, None, 1.0))
        # the request fits; the answer (the body again, with the parsed fields) does not
        self.patch(prepare, "MAX_FRAME", len(request) + 10)
        out = io.BytesIO()
        prepworker.serve(io.BufferedReader(io.BytesIO(request)), out, 1, no_dns())
        [answer] = map(prepare.load_answer, prepare.FrameReader().feed(out.getvalue()))
        self.assertEqual(answer[:2], (7, None))
        self.assertIn("answer not sent: FrameError", answer[2])
