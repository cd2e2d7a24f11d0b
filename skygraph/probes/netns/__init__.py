"""Network namespaces and their interfaces: the netns probe (inotify on the
namespace run directory) and one netlink probe (pyroute2) per namespace.
The only home of `pyroute2`."""
