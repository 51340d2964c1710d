// size_classes.h: the zspool's size-class geometry.
//
// A size class holds objects of one slot size in zspages: spans of 1..N
// contiguous 4 KiB pages (N = max_pages_per_zspage, 8 by default as in the
// kernel's CONFIG_ZSMALLOC_CHAIN_SIZE). Slot sizes step by 16 bytes from 32
// to 4096, which gives 255 class slots (zsmalloc: ZS_SIZE_CLASSES). Each
// class picks its chain length, and classes that end up with the same
// (pages, objects) geometry are merged into the largest of them: they would
// spend exactly the same memory per object, so keeping them apart would only
// add partially filled zspages.
//
//   SizeClassTable t = SizeClassTable::Build({});
//   const SizeClass& c = t.ForSize(1500);   // c.size >= 1500
//
// The chain length is the kernel's calculate_zspage_chain_size(): the chain
// with the smallest tail waste, first minimum wins, powers of two get one
// page. (Minimising the wasted *fraction* instead picks the same chains for
// every 16-byte class up to 16 pages, so there is nothing to gain there.)
// The kernel pays for long chains with partially filled zspages; the zspool
// commits a zspage's pages only as objects land in them (see zspool.h), so
// that cost is gone here.
#ifndef FARSWAP_ALLOC_SIZE_CLASSES_H_
#define FARSWAP_ALLOC_SIZE_CLASSES_H_

#include <cstddef>
#include <cstdint>
#include <vector>

namespace farswap::alloc {

inline constexpr uint32_t kZsPageBytes = 4096;
inline constexpr uint32_t kMinObjectSize = 32;  // zsmalloc ZS_MIN_ALLOC_SIZE
inline constexpr uint32_t kMaxObjectSize = kZsPageBytes;
inline constexpr uint32_t kClassDelta = 16;  // ZS_SIZE_CLASS_DELTA = 4096 >> CLASS_BITS(8)
inline constexpr uint32_t kClassSlots = (kMaxObjectSize - kMinObjectSize) / kClassDelta + 1;
static_assert(kClassSlots == 255, "zsmalloc has 255 size classes for 4 KiB pages");
inline constexpr uint32_t kMaxChainPages = 16;  // CONFIG_ZSMALLOC_CHAIN_SIZE range 4..16
// The largest number of objects one zspage can hold: the smallest class in
// the longest chain. Bounds per-zspage bitmaps.
inline constexpr uint32_t kMaxObjsPerZspage = kMaxChainPages * kZsPageBytes / kMinObjectSize;
static_assert(kMaxObjsPerZspage <= 65535, "object index must fit 16 bits");

struct SizeClassOptions {
  uint32_t max_pages_per_zspage = 8;  // 1..kMaxChainPages
  // Extra bytes added to every object before the class lookup. The kernel
  // adds an 8-byte handle header (ZS_HANDLE_SIZE); the zspool keeps handles
  // out of line and adds nothing. Only the kernel-geometry tests set it.
  uint32_t object_header_bytes = 0;
};

// SizeClass is one real (unmerged) class.
struct SizeClass {
  uint32_t index = 0;  // index of the real class (its largest slot)
  uint32_t size = 0;   // slot size in bytes
  uint32_t pages_per_zspage = 0;
  uint32_t objs_per_zspage = 0;
  bool huge = false;  // one object per one-page zspage: stored whole
};

// SizeClassTable maps object sizes to classes. Immutable after Build(); safe
// for concurrent use.
class SizeClassTable {
 public:
  static SizeClassTable Build(const SizeClassOptions& options);

  // SlotForSize returns the class slot (0..254) an object of `len` bytes
  // (1..4096) maps to, before merging.
  static uint32_t SlotForSize(uint32_t len);

  // ForSize returns the real class for an object of `len` bytes (1..4096).
  const SizeClass& ForSize(uint32_t len) const;
  // ForSlot returns the real class that class slot `slot` is merged into.
  const SizeClass& ForSlot(uint32_t slot) const { return classes_[slot_to_class_[slot]]; }

  // classes() lists the real classes, largest first.
  const std::vector<SizeClass>& classes() const { return classes_; }
  // class_id(c) is c's position in classes().
  uint32_t ClassIdForSlot(uint32_t slot) const { return slot_to_class_[slot]; }

  // huge_class_size is the smallest object length (as passed to ForSize)
  // that lands in the huge class; callers store data that doesn't compress
  // below it raw.
  uint32_t huge_class_size() const { return huge_class_size_; }
  uint32_t object_header_bytes() const { return header_; }

  // ChainPages is the chain length (pages per zspage) for slot size `size`.
  static uint32_t ChainPages(uint32_t size, uint32_t max_pages);

 private:
  std::vector<SizeClass> classes_;
  std::vector<uint32_t> slot_to_class_;  // kClassSlots entries
  uint32_t huge_class_size_ = kMaxObjectSize;
  uint32_t header_ = 0;
};

}  // namespace farswap::alloc

#endif  // FARSWAP_ALLOC_SIZE_CLASSES_H_
