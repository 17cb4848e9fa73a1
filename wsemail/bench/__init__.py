"""In charge of the benchmarks that print figures (never timed tests): the accept path
under load (`accept`, `wsemail bench`) and the paper's test bed (`testbed`, `wsemail bench
testbed`). They start real servers on loopback and drive them through the real client.
"""
