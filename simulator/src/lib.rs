//! Phoenix's digital twin (issue #3): capacity-planning simulation.
