"""twistd plugin: ``twistd -n aimx-verifier`` runs the port-25 verifier service."""

from twisted.application.service import ServiceMaker

aimx_verifier = ServiceMaker(
    "aimx-verifier",
    "aimx.verifier.service",
    "aimx port-25 verifier (/probe, /health, port-25 listener)",
    "aimx-verifier",
)
