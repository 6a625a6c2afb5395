"""Kubernetes test bed: a real control plane plus node agents that run pods as local processes.

Nothing here can run containers, so :mod:`testbed.agent` stands in for kubelet and the container
runtime; everything else is upstream Kubernetes built by ``scripts/build-kubernetes.sh``
(versions pinned in ``testbed/versions.env``):

* control plane on 127.0.200.1: etcd (:12379), kube-apiserver (:6443), kube-controller-manager,
  kube-scheduler; CoreDNS answers cluster.local on the pod bridge address 10.244.0.1;
* pods get a network namespace each on bridge ``qktb0`` (10.244.<node>.0/24 per node, no route
  beyond the bridge), so headless Services and ``<pod>.<service>.<ns>.svc.cluster.local`` work;
  ClusterIP Services get no virtual IP routing (there is no kube-proxy);
* PVCs of the default StorageClass ``testbed-local`` become host directories that any node can
  mount (:mod:`testbed.provisioner`), so pods keep their data when they move between nodes;
* PVCs of a StorageClass with provisioner ``rbd.csi.ceph.com`` become RBD images of a real Ceph
  cluster, staged on the pod's node as that node's own Ceph client by the ceph-csi stand-in
  (:mod:`testbed.cephcsi`: rbd-fuse, a loop device and ext4 instead of krbd);
* images map to local commands in :mod:`testbed.images` (extend ``IMAGES`` there).

Use it from pytest through the fixtures in ``tests/conftest.py``, or by hand with
``python -m testbed`` (prints an ``export KUBECONFIG=...`` line).
"""
