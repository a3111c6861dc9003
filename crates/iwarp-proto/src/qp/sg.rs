//! A position in a scatter/gather list, and the pieces of the bytes that follow it: the one
//! walk over elements that transmit (gathering a payload) and receive (scattering a Send
//! into its receive buffer, planning a direct read, folding placed bytes into the CRC) share.

use super::Sge;
use crate::mem::MrRef;

/// Element index and offset within that element. At rest it never sits at the end of an
/// element that has a next one, so it points at the next byte of data or past the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SgCursor {
    index: usize,
    offset: usize,
}

impl SgCursor {
    /// The pieces of the next `n` bytes from here (fewer if the list ends first), without
    /// moving; [`Pieces::end`] gives where they stop.
    pub fn pieces(self, sges: &[Sge], n: usize) -> Pieces<'_> {
        Pieces { sges, at: self, left: n }
    }
}

/// One contiguous piece of a scatter/gather walk: `len` bytes at `offset` of region `mr`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Piece<'a> {
    pub mr: &'a MrRef,
    pub offset: usize,
    pub len: usize,
}

/// The pieces of a run of bytes, element by element, skipping empty elements.
#[derive(Debug)]
pub(super) struct Pieces<'a> {
    sges: &'a [Sge],
    at: SgCursor,
    left: usize,
}

impl<'a> Pieces<'a> {
    /// Where the walk stands: after the pieces returned so far, moved over any empty elements
    /// that follow.
    pub fn end(&self) -> SgCursor {
        let mut at = self.at;
        while self.sges.get(at.index).is_some_and(|s| s.len <= at.offset) {
            at.index += 1;
            at.offset = 0;
        }
        at
    }

    /// Bytes asked for that the list could not supply (after the walk).
    pub fn short(&self) -> usize {
        self.left
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Piece<'a>;

    fn next(&mut self) -> Option<Piece<'a>> {
        while self.left > 0 {
            let s = self.sges.get(self.at.index)?;
            let take = s.len.saturating_sub(self.at.offset).min(self.left);
            let offset = s.offset + self.at.offset;
            self.left -= take;
            self.at.offset += take;
            if self.at.offset >= s.len {
                self.at.index += 1;
                self.at.offset = 0;
            }
            if take > 0 {
                return Some(Piece { mr: &s.mr, offset, len: take });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{Access, RawMem, StagTable};

    fn list(lens: &[usize]) -> Vec<Sge> {
        let t = StagTable::new(1);
        let pd = t.new_pd();
        let mr = t.register(RawMem::alloc(4096, false).unwrap(), pd, Access::LOCAL_WRITE, 0).unwrap();
        let mut at = 0;
        lens.iter()
            .map(|&len| {
                let s = Sge { mr: MrRef::clone(&mr), offset: at, len };
                at += len + 100;
                s
            })
            .collect()
    }

    fn walk(sges: &[Sge], at: SgCursor, n: usize) -> (Vec<(usize, usize)>, SgCursor, usize) {
        let mut it = at.pieces(sges, n);
        let v = (&mut it).map(|p| (p.offset, p.len)).collect();
        (v, it.end(), it.short())
    }

    #[test]
    fn pieces_cross_elements_and_skip_empty_ones() {
        let s = list(&[10, 0, 5, 20]);
        // Elements start at offsets 0, 110, 210, 315.
        let (v, end, short) = walk(&s, SgCursor::default(), 12);
        assert_eq!(v, vec![(0, 10), (210, 2)]);
        assert_eq!(end, SgCursor { index: 2, offset: 2 });
        assert_eq!(short, 0);
        // Finishing an element rests on the next one with data, past the empty one.
        let (v, end, _) = walk(&s, SgCursor::default(), 10);
        assert_eq!(v, vec![(0, 10)]);
        assert_eq!(end, SgCursor { index: 2, offset: 0 });
        let (v, end, _) = walk(&s, end, 8);
        assert_eq!(v, vec![(210, 5), (315, 3)]);
        assert_eq!(end, SgCursor { index: 3, offset: 3 });
    }

    #[test]
    fn a_walk_past_the_end_reports_the_shortfall() {
        let s = list(&[4, 4]);
        let (v, end, short) = walk(&s, SgCursor { index: 1, offset: 1 }, 10);
        assert_eq!(v, vec![(105, 3)]);
        assert_eq!(end, SgCursor { index: 2, offset: 0 });
        assert_eq!(short, 7);
        assert_eq!(walk(&s, end, 1).0, vec![]);
    }

    #[test]
    fn a_walk_in_steps_ends_where_one_walk_does() {
        let s = list(&[3, 0, 0, 7, 1]);
        for split in 0..=11 {
            let (first, mid, _) = walk(&s, SgCursor::default(), split);
            let (second, end, _) = walk(&s, mid, 11 - split);
            let (whole, whole_end, _) = walk(&s, SgCursor::default(), 11);
            assert_eq!(end, whole_end, "split at {split}");
            let bytes = |v: &[(usize, usize)]| v.iter().flat_map(|&(o, l)| o..o + l).collect::<Vec<_>>();
            assert_eq!([bytes(&first), bytes(&second)].concat(), bytes(&whole), "split at {split}");
        }
    }
}
