//! Test environment: real kube-apiserver + etcd and a moto server on loopback.
