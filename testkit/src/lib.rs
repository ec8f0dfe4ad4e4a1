//! ringside-testkit (in progress).
