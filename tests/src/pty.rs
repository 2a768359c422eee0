//! A command run on a pseudo-terminal of a chosen size, and a small terminal (`Screen`) that
//! replays what it wrote, so a test sees the screen a person would: where each redraw lands,
//! what a line wider than the terminal does (it wraps, and the test is told), and what is left
//! on screen at the end.
//!
//! `Screen` knows only the sequences veer's live view is allowed to use (cursor to the start of
//! a line above, erase line, erase below); any other escape sequence fails the test.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A child whose stdin, stdout and stderr are the slave side of a pseudo-terminal.
pub struct PtyChild {
    master: OwnedFd,
    child: Child,
    /// Everything read from the terminal so far.
    pub output: Vec<u8>,
}

/// Starts `cmd` on a new pseudo-terminal `cols` wide and `rows` high.
pub fn spawn(cmd: &mut Command, cols: u16, rows: u16) -> io::Result<PtyChild> {
    let mut master = -1;
    let mut slave = -1;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the ints we own and reads `size`; the name
    // and termios arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &raw mut master,
            &raw mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &raw const size,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let io = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
    let child = cmd
        .stdin(io(&slave)?)
        .stdout(io(&slave)?)
        .stderr(io(&slave)?)
        .spawn()?;
    // Our copy of the slave closes here: once the child exits, reading the master ends.
    drop(slave);
    Ok(PtyChild {
        master,
        child,
        output: Vec::new(),
    })
}

impl PtyChild {
    /// Reads what the child writes for at most `timeout`; returns whether it exited (and its
    /// status) by then.
    pub fn read_for(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let fd = self.master.as_raw_fd();
        let mut buf = [0_u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().min(200)).unwrap_or(200);
            // SAFETY: one pollfd we own.
            let n = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if n > 0 {
                // SAFETY: reads at most `buf.len()` bytes into the buffer we own.
                let got = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if got > 0 {
                    self.output
                        .extend_from_slice(&buf[..usize::try_from(got).unwrap_or(0)]);
                    continue;
                }
                // EIO (or 0): every slave descriptor is closed, the child is gone.
                return self.child.wait().map(Some);
            }
            if let Some(status) = self.child.try_wait()? {
                // Drain what is left, then report.
                if n == 0 {
                    return Ok(Some(status));
                }
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills the child (a detach) and waits for it.
    pub fn kill(&mut self) {
        // Already exited is fine.
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A terminal `cols` wide that replays output: text, `\r`, `\n`, and the escape sequences
/// `ESC [ n F` (cursor to the start of the line `n` up), `ESC [ 2 K` (erase the line) and
/// `ESC [ J` (erase from the cursor to the end of the screen).
#[derive(Debug)]
pub struct Screen {
    cols: usize,
    lines: Vec<Vec<char>>,
    row: usize,
    col: usize,
    /// Every line that was written wider than the terminal (it wrapped).
    pub too_wide: Vec<String>,
    /// How many times the cursor was moved up over a previous block (redraws).
    pub redraws: usize,
}

impl Screen {
    /// An empty terminal `cols` wide.
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            lines: vec![Vec::new()],
            row: 0,
            col: 0,
            too_wide: Vec::new(),
            redraws: 0,
        }
    }

    fn line(&mut self) -> &mut Vec<char> {
        while self.lines.len() <= self.row {
            self.lines.push(Vec::new());
        }
        &mut self.lines[self.row]
    }

    fn put(&mut self, c: char) {
        if self.col >= self.cols {
            // A real terminal wraps here: the block would take more lines than drawn.
            let line: String = self.line().iter().collect();
            self.too_wide.push(line);
            self.row += 1;
            self.col = 0;
        }
        let col = self.col;
        let line = self.line();
        while line.len() <= col {
            line.push(' ');
        }
        line[col] = c;
        self.col += 1;
    }

    /// Replays `text`. Panics on an escape sequence the live view may not use.
    pub fn feed(&mut self, text: &str) {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => self.col = 0,
                '\n' => {
                    self.row += 1;
                    self.line();
                }
                '\x1b' => {
                    assert_eq!(chars.next(), Some('['), "an escape that is not CSI");
                    let mut arg = String::new();
                    let end = loop {
                        match chars.next() {
                            Some(d) if d.is_ascii_digit() => arg.push(d),
                            Some(e) => break e,
                            None => panic!("a cut escape sequence"),
                        }
                    };
                    let n: usize = arg.parse().unwrap_or(1);
                    match (end, arg.as_str()) {
                        ('F', _) => {
                            assert!(
                                n <= self.row,
                                "the cursor moves {n} lines up from line {}: above the top",
                                self.row
                            );
                            self.row -= n;
                            self.col = 0;
                            self.redraws += 1;
                        }
                        ('K', "2") => self.line().clear(),
                        ('J', "" | "0") => {
                            let col = self.col;
                            let row = self.row;
                            self.line().truncate(col);
                            self.lines.truncate(row + 1);
                        }
                        other => panic!("an escape sequence the live view may not use: {other:?}"),
                    }
                }
                c if c.is_control() => panic!("a control character: {c:?}"),
                c => self.put(c),
            }
        }
    }

    /// What the screen shows: each line without its trailing spaces, the empty lines at the
    /// bottom dropped.
    pub fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .lines
            .iter()
            .map(|l| l.iter().collect::<String>().trim_end().to_owned())
            .collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redraw_replaces_the_block_and_a_long_line_is_caught() {
        let mut s = Screen::new(10);
        s.feed("\x1b[2Kaaa\r\n\x1b[2Kbbbbbb\r\n\x1b[J");
        s.feed("\x1b[2F\x1b[2Kcc\r\n\x1b[J");
        assert_eq!(s.text(), "cc");
        assert_eq!(s.redraws, 1);
        assert!(s.too_wide.is_empty());
        s.feed("0123456789X\r\n");
        assert_eq!(s.too_wide, ["0123456789"]);
    }
}
