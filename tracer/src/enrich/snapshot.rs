//! Pod/node metadata from a `kubectl get pods,services,nodes -A -o json` snapshot.
