//! Rules on top of `epoch-slotmap` (see its issue; a stub until then).
