//! Read-only access to a packet, implemented by the XDP context (bounds-checked
//! `ptr_at` loads) and by byte slices (raw socket, tests, fuzzing).

pub trait PacketView {
    /// Total bytes available from the start of the frame.
    fn len(&self) -> usize;

    /// Loads `N` bytes at `offset`, or `None` when they are not all inside the
    /// packet. Implementations must never read out of bounds.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PacketView for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        let bytes = self.get(offset..end)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Some(out)
    }
}
