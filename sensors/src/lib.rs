//! Phoenix's node interface (issue #4): reading and capping a server's power.
