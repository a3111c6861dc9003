//! The STag table and regions, pinned to exact values: emptiness, the cyclic index order, and
//! deregistration of a handle the table does not hold.

use iwarp_proto::mem::{Access, RawMem, StagTable};

#[test]
fn emptiness_of_regions_and_tables() {
    assert!(RawMem::alloc(0, false).unwrap().is_empty());
    assert!(!RawMem::alloc(8, false).unwrap().is_empty());
    assert!(!RawMem::alloc(8, true).unwrap().is_empty());
    let t = StagTable::new(3);
    assert!(t.is_empty());
    let pd = t.new_pd();
    let empty = t.register(RawMem::alloc(0, false).unwrap(), pd, Access::empty(), 0).unwrap();
    assert!(empty.is_empty());
    assert!(!t.is_empty());
    let full = t.register(RawMem::alloc(8, false).unwrap(), pd, Access::empty(), 0).unwrap();
    assert!(!full.is_empty());
    assert_eq!(t.len(), 2);
}

#[test]
fn indexes_are_handed_out_in_order_from_the_random_start() {
    let t = StagTable::new(11);
    let pd = t.new_pd();
    let idx: Vec<u32> = (0..5)
        .map(|_| t.register(RawMem::alloc(8, false).unwrap(), pd, Access::empty(), 0).unwrap().stag().index())
        .collect();
    for w in idx.windows(2) {
        // Cyclic: the next index, or 1 after the largest (24-bit) one.
        let want = if w[0] == 0x00FF_FFFF { 1 } else { w[0] + 1 };
        assert_eq!(w[1], want, "{idx:?}");
    }
}

#[test]
fn deregistering_another_tables_region_leaves_this_table_alone() {
    // Same seed: the same first index in both tables.
    let a = StagTable::new(5);
    let b = StagTable::new(5);
    let ra = a.register(RawMem::alloc(8, false).unwrap(), a.new_pd(), Access::REMOTE_READ, 0).unwrap();
    let rb = b.register(RawMem::alloc(8, false).unwrap(), b.new_pd(), Access::REMOTE_READ, 0).unwrap();
    assert_eq!(ra.stag().index(), rb.stag().index());
    assert!(!b.deregister(&ra));
    assert_eq!(b.len(), 1);
    assert!(b.lookup(rb.stag()).is_some());
}
