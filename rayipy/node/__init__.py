"""The processes: head, node agent, worker, the driver's I/O thread, and the local launcher."""
