"""The hook events (L0): the names config.toml, the control socket, hooks and the CLI share.

A module of its own, importing nothing, so that the CLI's parser can offer them
without loading the config model.
"""

ON_RECEIVE = "on_receive"
AFTER_SEND = "after_send"
EVENTS = (ON_RECEIVE, AFTER_SEND)
