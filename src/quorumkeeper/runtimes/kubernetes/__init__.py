"""Members as pods of a StatefulSet: the Kubernetes runtime."""
