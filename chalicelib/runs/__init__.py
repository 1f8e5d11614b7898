"""One run from source to sinks (a landed file, the schedule, a replay), behind small ports."""
