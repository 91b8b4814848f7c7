"""twistd plugin: ``twistd -n aimx`` runs the aimx daemon."""

from twisted.application.service import ServiceMaker

aimx = ServiceMaker("aimx", "aimx.service", "aimx mail server for AI agents", "aimx")
