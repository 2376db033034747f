"""Pure logic, no sockets: scheduling state, object ownership, ObjectRef futures, options."""
