"""Local market venue simulators for tests and benchmarks: real servers on loopback that speak
an exchange's documented wire protocol, replay recorded trades and inject faults."""
