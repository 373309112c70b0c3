"""HIL suites: plain pytest files run against any board by the `hil.plugin` fixtures.

ocula hil --port sim://sim            (or: pytest hil/suites --board-port sim://sim)
"""
