//! The export engine (issue 3).
