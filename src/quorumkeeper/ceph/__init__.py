"""Ceph RBD housekeeping for ceph-csi volumes: access checks, lock fencing, orphan images."""
