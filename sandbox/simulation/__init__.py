"""A seeded, deterministic simulation of the whole loop (CRM ↔ mailbridge ↔ ESP), checked
against a reference model, in the spirit of FoundationDB's simulation testing.

Many seeds run side by side in one world: each seed ("lane") has its own CRM list, its own
Mailchimp list and its own address namespace, all advancing in lockstep; sync and push are
shared steps. See `runner.simulate` and `mailbridge simulate`.
"""

from sandbox.simulation.runner import SimulationReport, simulate

__all__ = ["SimulationReport", "simulate"]
