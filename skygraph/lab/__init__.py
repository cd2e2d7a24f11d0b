"""The single-machine lab (`skygraph lab up|down|status`): Skydive's three-node
Vagrant lab (an analyzer, two agents with Open vSwitch joined by GRE, a TOR
between them) built with network namespaces. `layout` names everything,
`net` builds the network, `procs` runs the processes, `commands` is the CLI.
"""
