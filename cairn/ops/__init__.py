"""The operations: what a user can do to a repository, written once for every face.

`cairn/cli/`, `cairn/appliance/` (the REST API and the scheduler) and the web console only
parse their input, call a function here and format its typed result; none of them holds a
second copy of an operation. Each function takes an open `Repository` (the caller opens it,
in a ``with`` block, and so closes it) and typed arguments, returns a dataclass, and raises
only the errors of `cairn/errors.py`. Below this layer sit `store/`, `virt/`, `insights/`,
`replication/` and `sources/`; nothing here knows argparse or HTTP.

- `points`: list points, a point's JSON (one schema everywhere), delete (held for the
  deletion window, or at once) and undelete points.
- `retention`: plan and apply a retention policy; the one place that decides what a policy
  may delete, and why everything else is kept.
- `restore`: write a point out.
- `clones`: make, list and remove clones; `export`: serve a point or clone over NBD;
  `virtualize`: boot a point as a VM now; `screenshot_verify`: boot it, judge its screen.
- `backup`: back up an image file or block device; `vm_backup`: a running QEMU VM.
- `pair`: pair a protected machine with an appliance; `schedules`: preview a retention
  policy (setting a schedule is the appliance's, `appliance.scheduler.set_schedule`);
  `offsite`: replicate to the cloud by policy; `machine_points`: machine points whole.
- `progress`: how an operation reports progress to whichever face watches.
"""
