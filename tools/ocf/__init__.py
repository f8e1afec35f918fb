"""The Pacemaker (OCF) resource agent `ocf:qstore:qstored`: decisions in `decide`, actions in
`agent`, the executable Pacemaker runs in `qstored` (installed by `qstore-ocf install`)."""
