//! Block devices: what a target serves as a namespace, and what an attached remote namespace
//! looks like to the NBD front end.
//!
//! Offsets and lengths are in bytes. A device has a fixed size; accesses past its end fail with
//! [`io::ErrorKind::InvalidInput`] and touch nothing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::RwLock;

/// A fixed-size block device, shared between the threads that serve it.
pub trait BlockDevice: Send + Sync {
    /// The size in bytes.
    fn size(&self) -> u64;
    /// The logical block size in bytes (a power of two, at least 512).
    fn block_size(&self) -> u32 {
        512
    }
    /// Reads `buf.len()` bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Writes `len` zero bytes at `offset`.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(self.size(), offset, len)?;
        let zeros = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

/// Fails unless `[offset, offset + len)` lies inside a device of `size` bytes.
pub fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("access of {len} bytes at {offset} is outside the device's {size} bytes"),
        )),
    }
}

/// A device backed by a regular file (or a block device node), read and written in place with
/// `pread`/`pwrite`.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    size: u64,
}

impl FileDevice {
    /// Opens `path` for reading and writing; its current length is the device's size.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(FileDevice { file, size })
    }

    /// Opens `path`, creating it if missing, and sets its length to `size` bytes (growing it
    /// with zeros or truncating it).
    pub fn create(path: &Path, size: u64) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        file.set_len(size)?;
        Ok(FileDevice { file, size })
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.file.write_all_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// A device held in memory (zeroed at creation).
#[derive(Debug)]
pub struct MemDevice {
    bytes: RwLock<Vec<u8>>,
}

impl MemDevice {
    /// A device of `size` zero bytes.
    pub fn new(size: usize) -> Self {
        MemDevice { bytes: RwLock::new(vec![0; size]) }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.bytes.read().unwrap_or_else(|e| e.into_inner()).len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = self.bytes.read().unwrap_or_else(|e| e.into_inner());
        check_range(bytes.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = self.bytes.write().unwrap_or_else(|e| e.into_inner());
        check_range(bytes.len() as u64, offset, buf.len() as u64)?;
        let start = offset as usize;
        bytes[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(dev: &dyn BlockDevice) {
        let size = dev.size();
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        dev.write_at(&data, 512).unwrap();
        let mut back = vec![0u8; 4096];
        dev.read_at(&mut back, 512).unwrap();
        assert_eq!(back, data);
        dev.write_zeroes(1024, 1024).unwrap();
        dev.read_at(&mut back, 512).unwrap();
        assert!(back[512..1536].iter().all(|&b| b == 0));
        assert_eq!(&back[..512], &data[..512]);
        assert_eq!(&back[1536..], &data[1536..]);
        // past the end, and offsets that overflow: refused, nothing touched
        assert_eq!(dev.write_at(&[1; 2], size - 1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(dev.read_at(&mut [0; 1], u64::MAX).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(dev.write_zeroes(size, 1).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        let mut last = [9u8; 1];
        dev.read_at(&mut last, size - 1).unwrap();
        assert_eq!(last, [0]);
        dev.flush().unwrap();
    }

    #[test]
    fn memory_device_reads_what_was_written_and_refuses_out_of_range() {
        exercise(&MemDevice::new(1 << 16));
    }

    #[test]
    fn file_device_reads_what_was_written_and_refuses_out_of_range() {
        let path = std::env::temp_dir().join(format!("iwarp-nvmf-block-{}", std::process::id()));
        let dev = FileDevice::create(&path, 1 << 16).unwrap();
        exercise(&dev);
        drop(dev);
        let reopened = FileDevice::open(&path).unwrap();
        assert_eq!(reopened.size(), 1 << 16);
        std::fs::remove_file(&path).unwrap();
    }
}
