"""The operator toolkit (L0, pure): what setup, doctor, the port check, the service
units and C{--bind} decide, apart from the mail model in L{aimx.core}."""
