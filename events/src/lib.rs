//! ringside-events (in progress).
