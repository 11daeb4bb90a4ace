//! What a probe checks and how fast it gives up, with Kubernetes' defaults
//! filled in.

use crate::policy::pod::{Container, IntOrString, Probe};

/// Kubernetes' defaults for absent probe fields.
pub(crate) const DEFAULT_PERIOD: i32 = 10;
pub(crate) const DEFAULT_TIMEOUT: i32 = 1;
pub(crate) const DEFAULT_FAILURE_THRESHOLD: i32 = 3;

/// A probe's target, with named ports resolved, for structural comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handler {
    Http {
        path: String,
        port: Port,
        host: String,
        scheme: String,
    },
    Tcp {
        port: Port,
        host: String,
    },
    Grpc {
        port: i32,
        service: String,
    },
    Exec {
        argv: Vec<String>,
    },
    /// No handler set (the API server rejects this; nothing to compare).
    None,
}

/// A probe port: a number, or a name with the number it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Port {
    Number(i32),
    /// A named port the container does not declare.
    Unresolved(String),
}

pub(crate) fn resolve(port: &IntOrString, container: &Container) -> Port {
    match port {
        IntOrString::Int(n) => Port::Number(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map_or_else(
                || Port::Unresolved(name.clone()),
                |p| Port::Number(p.container_port),
            ),
    }
}

pub(crate) fn handler(probe: &Probe, container: &Container) -> Handler {
    if let Some(http) = &probe.http_get {
        let path = http
            .path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Handler::Http {
            path,
            port: resolve(&http.port, container),
            host: http.host.clone().unwrap_or_default(),
            scheme: http.scheme.clone().unwrap_or_else(|| "HTTP".to_owned()),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        Handler::Tcp {
            port: resolve(&tcp.port, container),
            host: tcp.host.clone().unwrap_or_default(),
        }
    } else if let Some(grpc) = &probe.grpc {
        Handler::Grpc {
            port: grpc.port,
            service: grpc.service.clone().unwrap_or_default(),
        }
    } else if let Some(exec) = &probe.exec {
        Handler::Exec {
            argv: exec.command.clone(),
        }
    } else {
        Handler::None
    }
}

/// How long a probe takes to fail a pod, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub(crate) initial_delay: i32,
    pub(crate) period: i32,
    pub(crate) timeout: i32,
    pub(crate) failure_threshold: i32,
}

impl Timing {
    pub(crate) fn of(probe: &Probe) -> Self {
        Self {
            initial_delay: probe.initial_delay_seconds.unwrap_or(0).max(0),
            period: probe.period_seconds.unwrap_or(DEFAULT_PERIOD).max(1),
            timeout: probe.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT).max(1),
            failure_threshold: probe
                .failure_threshold
                .unwrap_or(DEFAULT_FAILURE_THRESHOLD)
                .max(1),
        }
    }

    /// failureThreshold x periodSeconds.
    pub(crate) fn failure_window(self) -> i64 {
        i64::from(self.failure_threshold) * i64::from(self.period)
    }

    /// Worst case from the first failed check to the probe failing the pod:
    /// every attempt but the last waits a period, the last one its timeout
    /// too.
    pub(crate) fn time_to_fail(self) -> i64 {
        self.failure_window() + i64::from(self.timeout)
    }
}
