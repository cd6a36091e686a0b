"""The reliability suite: random kills, and a runner that gathers every crash, fault,
hostile-input, concurrency, durability and torn-state case into one figures table.

``python -m tests.reliability [--trials N] [--quick]`` (or ``make reliability``).
"""
