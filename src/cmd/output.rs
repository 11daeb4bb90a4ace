//! Standard output for every subcommand: a reader that goes away (`| head`)
//! is not an error, any other write error is reported once.

use std::io::{self, Write};

use super::Exit;

/// Locked, buffered standard output or a file (a line-buffered stdout
/// would make a system call per finding). After a broken pipe, writes are discarded and
/// succeed; any other error fails the write and is reported by
/// [`Output::finish`].
pub(crate) struct Output {
    out: io::BufWriter<Box<dyn Write>>,
    /// What `out` is, for error messages.
    name: String,
    closed: bool,
    failed: Option<io::Error>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("name", &self.name)
            .field("closed", &self.closed)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

// === impl Output ===

impl Output {
    pub(crate) fn stdout() -> Self {
        Self::to(Box::new(io::stdout().lock()), "standard output")
    }

    /// A new file at `path` (replaced when it exists).
    pub(crate) fn file(path: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self::to(Box::new(file), &path.display().to_string()))
    }

    fn to(out: Box<dyn Write>, name: &str) -> Self {
        Self {
            out: io::BufWriter::with_capacity(64 * 1024, out),
            name: name.to_owned(),
            closed: false,
            failed: None,
        }
    }

    /// Writes all of `text` (see the type for errors).
    pub(crate) fn print(&mut self, text: &str) {
        let _ = self.write_all(text.as_bytes());
    }

    /// Flushes, and maps the outcome to the command's exit status: `exit`
    /// when everything was written (or the reader left), [`Exit::Error`]
    /// after saying what failed.
    pub(crate) fn finish(mut self, exit: Exit) -> Exit {
        let _ = self.flush();
        match self.failed.take() {
            None => exit,
            Some(e) => {
                eprintln!("error: writing {}: {e}", self.name);
                Exit::Error
            }
        }
    }

    fn absorb(&mut self, result: io::Result<()>) -> io::Result<()> {
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => {
                let reported = io::Error::new(e.kind(), e.to_string());
                self.failed.get_or_insert(e);
                Err(reported)
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        if self.failed.is_some() {
            return Err(io::Error::other("standard output failed earlier"));
        }
        match self.out.write(buf) {
            Ok(n) => Ok(n),
            // `write_all` retries these.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => self.absorb(Err(e)).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed || self.failed.is_some() {
            return Ok(());
        }
        match self.out.flush() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            result => self.absorb(result),
        }
    }
}

/// Prints `text` in one go: the body of the commands that print a document.
pub(crate) fn print(text: &str) -> Exit {
    let mut out = Output::stdout();
    out.print(text);
    out.finish(Exit::Success)
}
