"""Open vSwitch: the OVSDB monitor (python-ovs IDL, the only home of `ovs`)
and the pure mapping from OVSDB rows to ovsbridge/ovsport/interface nodes."""
