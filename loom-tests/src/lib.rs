//! Loom model checks of epoch-slotmap (see its issue; a stub until then).
