"""The port-25 check over the network (L2): the verifier service and its callers.

  - L{aimx.verifier.service}: C{twistd -n aimx-verifier} (C{/health}, C{/probe},
    a port-25 listener);
  - L{aimx.verifier.client}: what C{aimx portcheck} and C{aimx setup} run (who holds
    port 25, the temporary responder, the outbound and inbound probes);
  - L{aimx.verifier.smtp}: the minimal SMTP responder and the prober both use.

The pure parts (verify host, targets, answers, occupancy parsing) are in
L{aimx.ops.portcheck}.
"""
