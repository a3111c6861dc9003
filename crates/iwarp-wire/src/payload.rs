//! Payload the codecs read without borrowing it.
//!
//! An FPDU's payload usually lives in registered memory, which the network and the
//! application share: the stack borrows it only for one pass under the region's access lock
//! (see `iwarp-proto`'s memory model), never for longer. The framer and deframer therefore
//! read payload through [`PayloadSource`], which a plain slice implements by lending itself
//! and a region by lending its bytes for the duration of each call.

/// Bytes the framer or deframer may read in order, in one or more pieces.
pub trait PayloadSource {
    /// Length in bytes.
    fn len(&self) -> usize;

    /// `true` when there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with the bytes `start..start + len`, in order, in one or more pieces.
    ///
    /// # Panics
    /// If `start + len` exceeds [`len`](Self::len): callers pass ranges inside the source.
    fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8]));

    /// Appends the bytes `start..start + len` to `out`.
    ///
    /// # Panics
    /// As [`for_each_chunk`](Self::for_each_chunk).
    fn copy_to(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        self.for_each_chunk(start, len, &mut |c| out.extend_from_slice(c));
    }
}

impl PayloadSource for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        f(&self[start..start + len]);
    }

    fn copy_to(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&self[start..start + len]);
    }
}

/// Arrays and vectors lend themselves as their slice does.
macro_rules! as_slice_source {
    ($($(#[$m:meta])* impl[$($g:tt)*] $t:ty;)*) => {$(
        $(#[$m])*
        impl<$($g)*> PayloadSource for $t {
            fn len(&self) -> usize {
                self.as_slice().len()
            }
            fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
                self.as_slice().for_each_chunk(start, len, f);
            }
            fn copy_to(&self, start: usize, len: usize, out: &mut Vec<u8>) {
                self.as_slice().copy_to(start, len, out);
            }
        }
    )*};
}

as_slice_source! {
    impl[const N: usize] [u8; N];
    impl[] Vec<u8>;
}

impl<T: PayloadSource + ?Sized> PayloadSource for &T {
    fn len(&self) -> usize {
        (**self).len()
    }

    fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
        (**self).for_each_chunk(start, len, f);
    }

    fn copy_to(&self, start: usize, len: usize, out: &mut Vec<u8>) {
        (**self).copy_to(start, len, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out one byte per chunk, as shared memory copied in small pieces.
    struct Bytewise<'a>(&'a [u8]);

    impl PayloadSource for Bytewise<'_> {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn for_each_chunk(&self, start: usize, len: usize, f: &mut dyn FnMut(&[u8])) {
            for b in &self.0[start..start + len] {
                f(std::slice::from_ref(b));
            }
        }
    }

    #[test]
    fn slices_and_chunked_sources_copy_the_same_bytes() {
        let data: Vec<u8> = (0..100u8).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        data[..].copy_to(10, 50, &mut a);
        Bytewise(&data).copy_to(10, 50, &mut b);
        assert_eq!(a, &data[10..60]);
        assert_eq!(a, b);
        assert_eq!(PayloadSource::len(&&data[..]), 100);
        assert!(PayloadSource::is_empty(&[][..]));
    }
}
