"""The relay: render nodes dial in, jobs go down their streams, results come back up.

The rest of the gateway uses only what :mod:`talos_gateway.relay.contract` defines.
"""
