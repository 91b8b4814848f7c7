"""What rendering hostile Markdown costs (aimx.core.markdown): CPU-time ratios, slow
by design, so not in the unit tree (tests.test_markdown has the rest)."""

import time

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.markdown import render


class LinearTimeTests(SynchronousTestCase):
    def test_hostile_input_stays_linear(self):
        """Inputs that are quadratic in the stock plugins (task items for tasklists,
        repeated headings for anchors; colons for gfm_autolink) cost work in
        proportion to their size: 4x the input costs about 4x the CPU (the stock
        plugins: 16x).  A ratio of this process's CPU time (best of three), not a
        wall-clock bound: load elsewhere on the machine does not move it."""

        def cpu(source: str) -> float:
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                render(source)
                best = min(best, time.process_time() - started)
            return best

        for unit in ("a: ", "- [ ] t\n", "# h\n\n"):
            small, large = cpu(unit * 2_000), cpu(unit * 8_000)
            self.assertLess(large / small, 9, unit)
