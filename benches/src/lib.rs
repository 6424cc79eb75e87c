//! Criterion benches against the peers (see its issue; a stub until then).
