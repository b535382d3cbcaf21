"""The benches that run studies: bench sweep (`benchsweep`), bench fidelity (`fidelity`), the fleet
soak (`soak`).

May import `sweeps.results`, `sweeps.run`, `sweeps.track`, `sweeps.spec` and `pricer`.
"""
