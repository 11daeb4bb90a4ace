//! A real OCI registry for tests: Debian's `docker-registry` (distribution
//! v2.8) on a free loopback port with filesystem storage, and a push helper
//! speaking its HTTP API.
//!
//! The binary comes from `hack/registry.sh install`, found through
//! `$PROBITY_REGISTRY_BIN` or the cache that script fills.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::image::sha256;
use crate::process::{Process, free_port};
use crate::{Error, e2e_required};

/// Environment variable naming the `docker-registry` binary.
pub const REGISTRY_BIN_ENV: &str = "PROBITY_REGISTRY_BIN";
/// How to fetch the binary.
pub const REGISTRY_HINT: &str = "hack/registry.sh install";

/// An HTTP answer: status, headers (names lowercased), body.
pub type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// A registry: one this process started (stopped, SIGKILL, when dropped),
/// or one reached at an address ([`Registry::at`]).
#[derive(Debug)]
pub struct Registry {
    process: Option<Process>,
    /// `<ip>:<port>` (loopback unless started on another address): the
    /// registry part of image references.
    pub host: String,
    dir: PathBuf,
}

/// The binary, or `None` (after saying so) when it is missing and tests may
/// skip.
///
/// # Panics
///
/// When it is missing and end-to-end tests are required.
pub fn locate_or_skip() -> Option<PathBuf> {
    match locate() {
        Ok(bin) => Some(bin),
        Err(why) => {
            assert!(
                !e2e_required(),
                "the OCI registry is required here but unavailable: {why}; fetch it with \
                 `{REGISTRY_HINT}`"
            );
            let line = format!(
                "skipping: docker-registry not found ({why}); fetch it with `{REGISTRY_HINT}`\n"
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

fn locate() -> Result<PathBuf, String> {
    crate::binaries::locate_tool(REGISTRY_BIN_ENV, "tools/docker-registry/docker-registry")
}

impl Registry {
    /// A registry already running at `host` (`host:port`, plain HTTP), to
    /// push to; nothing is started or stopped.
    pub fn at(host: &str) -> Self {
        Self {
            process: None,
            host: host.to_owned(),
            dir: PathBuf::new(),
        }
    }

    /// Starts a registry, or returns `None` (after saying so) when the
    /// binary is missing and tests may skip.
    ///
    /// # Panics
    ///
    /// When the binary is missing and end-to-end tests are required, or it
    /// does not start.
    pub fn start_or_skip() -> Option<Self> {
        let bin = locate_or_skip()?;
        Some(Self::start(&bin).unwrap_or_else(|e| panic!("starting docker-registry: {e}")))
    }

    /// Starts `bin` on a free loopback port and waits until `/v2/` answers.
    ///
    /// # Errors
    ///
    /// When it cannot be started or does not answer within 20 s.
    pub fn start(bin: &std::path::Path) -> Result<Self, Error> {
        Self::start_with(bin, "")
    }

    /// Like [`Registry::start`], with `extra` appended to the registry's
    /// YAML configuration (an `auth:` section, say). Any answer to `/v2/`
    /// (401 included) counts as up.
    ///
    /// # Errors
    ///
    /// When it cannot be started or does not answer within 20 s.
    pub fn start_with(bin: &std::path::Path, extra: &str) -> Result<Self, Error> {
        Self::launch(bin, "127.0.0.1", extra)
    }

    /// Like [`Registry::start`], listening on `ip` (an address of the run's
    /// own network namespace, such as a node's bridge, so that pods reach
    /// it too) at a port free on loopback.
    ///
    /// # Errors
    ///
    /// When it cannot be started or does not answer within 20 s.
    pub fn start_on(bin: &std::path::Path, ip: &str) -> Result<Self, Error> {
        Self::launch(bin, ip, "")
    }

    fn launch(bin: &std::path::Path, ip: &str, extra: &str) -> Result<Self, Error> {
        let port = free_port()?;
        let host = format!("{ip}:{port}");
        let dir =
            std::env::temp_dir().join(format!("probity-registry-{}-{port}", std::process::id()));
        let io = |source| Error::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir.join("data")).map_err(io)?;
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: {level}\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n{extra}",
                dir.join("data").display(),
                level =
                    std::env::var("PROBITY_REGISTRY_LOG").unwrap_or_else(|_| "error".to_owned()),
            ),
        )
        .map_err(io)?;
        let process = Process::spawn(
            "docker-registry",
            Command::new(bin).arg("serve").arg(&config),
            Some(&dir.join("registry.log")),
        )?;
        let mut registry = Self {
            process: Some(process),
            host,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200 | 401, _, _)) = registry.request("GET", "/v2/", &[], b"") {
                return Ok(registry);
            }
            if let Some(process) = registry.process.as_mut()
                && let Some(status) = process.exited()
            {
                return Err(Error::Exited {
                    component: "docker-registry".to_owned(),
                    status: status.to_string(),
                    log: process.log_tail(30),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Client(
                    "docker-registry did not answer within 20 s".to_owned(),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the registry (SIGKILL): a registry that is down.
    pub fn kill(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.kill();
        }
    }

    /// One HTTP/1.1 request: (status, headers lowercased, body).
    ///
    /// # Errors
    ///
    /// When the connection fails or the answer is not HTTP.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, Error> {
        let err = |m: String| Error::Client(format!("registry {method} {path}: {m}"));
        let mut stream = TcpStream::connect(&self.host).map_err(|e| err(e.to_string()))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| err(e.to_string()))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.host,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| err(e.to_string()))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .map_err(|e| err(e.to_string()))?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| err("no header terminator".to_owned()))?;
        let text = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = text.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("no status line".to_owned()))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok((status, headers, raw[split + 4..].to_vec()))
    }

    /// The directory holding the registry's configuration and data.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Pushes a minimal OCI image (a config blob, no layers) as
    /// `repository:tag` and returns its manifest digest. `salt` makes the
    /// image distinct, so pushing again with another salt moves the tag.
    ///
    /// # Errors
    ///
    /// When the registry rejects a step.
    pub fn push(&self, repository: &str, tag: &str, salt: &str) -> Result<String, Error> {
        self.push_as(repository, tag, salt, None)
    }

    /// [`Registry::push`] sending `authorization` (`Bearer ...`) on every
    /// request, for a registry with token auth.
    ///
    /// # Errors
    ///
    /// When the registry rejects a step.
    pub fn push_as(
        &self,
        repository: &str,
        tag: &str,
        salt: &str,
        authorization: Option<&str>,
    ) -> Result<String, Error> {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{{\"Labels\":{{\"salt\":\"{salt}\"}}}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
        );
        self.push_blob(repository, config.as_bytes(), authorization)?;
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
             \"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\
             \"digest\":\"{}\",\"size\":{}}},\"layers\":[]}}",
            sha256(config.as_bytes()),
            config.len()
        );
        self.put_manifest(repository, tag, manifest.as_bytes(), authorization)
    }

    /// Pushes `image` (its layers, config and manifest) as
    /// `repository:tag`; returns the manifest's digest.
    ///
    /// # Errors
    ///
    /// When the registry rejects a step.
    pub fn push_image(
        &self,
        repository: &str,
        tag: &str,
        image: &crate::image::Image,
    ) -> Result<String, Error> {
        for layer in &image.layers {
            self.push_blob(repository, layer.bytes(), None)?;
        }
        let config = image.config();
        self.push_blob(repository, &config, None)?;
        self.put_manifest(repository, tag, &image.manifest(&config), None)
    }

    /// Uploads `blob` (one monolithic upload) unless the registry has it.
    fn push_blob(
        &self,
        repository: &str,
        blob: &[u8],
        authorization: Option<&str>,
    ) -> Result<(), Error> {
        let digest = sha256(blob);
        let auth: Vec<(&str, &str)> = authorization
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (status, _, _) = self.request(
            "HEAD",
            &format!("/v2/{repository}/blobs/{digest}"),
            &auth,
            b"",
        )?;
        if status == 200 {
            return Ok(());
        }
        let (status, headers, _) = self.request(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &auth,
            b"",
        )?;
        let location = header(&headers, "location")
            .filter(|_| status == 202)
            .ok_or_else(|| Error::Client(format!("starting an upload answered {status}")))?;
        let location = location
            .strip_prefix(&format!("http://{}", self.host))
            .unwrap_or(&location)
            .to_owned();
        let separator = if location.contains('?') { '&' } else { '?' };
        let mut headers = auth.clone();
        headers.push(("Content-Type", "application/octet-stream"));
        let (status, _, body) = self.request(
            "PUT",
            &format!("{location}{separator}digest={digest}"),
            &headers,
            blob,
        )?;
        if status != 201 {
            return Err(Error::Client(format!(
                "uploading blob {digest} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }

    /// Puts an OCI image manifest as `repository:tag`; returns its digest
    /// after checking the registry computed the same.
    fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        manifest: &[u8],
        authorization: Option<&str>,
    ) -> Result<String, Error> {
        let mut headers: Vec<(&str, &str)> = authorization
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        headers.push(("Content-Type", crate::image::MANIFEST_MEDIA_TYPE));
        let (status, answer, body) = self.request(
            "PUT",
            &format!("/v2/{repository}/manifests/{tag}"),
            &headers,
            manifest,
        )?;
        if status != 201 {
            return Err(Error::Client(format!(
                "putting the manifest answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let digest = sha256(manifest);
        if header(&answer, "docker-content-digest").as_deref() != Some(digest.as_str()) {
            return Err(Error::Client(format!(
                "registry digest {:?} differs from {digest}",
                header(&answer, "docker-content-digest")
            )));
        }
        Ok(digest)
    }
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
        if self.process.is_some() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
