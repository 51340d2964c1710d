// sanitizers.h: which sanitizer this translation unit is built with, for the
// few places whose behaviour must differ under one.
//
//   #include "farswap/common/sanitizers.h"
//   #if defined(FARSWAP_UNDER_ASAN)
//   // ASan's allocator replaces malloc: glibc's mallinfo2 does not see it.
//   #endif
//
// FARSWAP_UNDER_TSAN likewise for ThreadSanitizer (e.g. a stress test runs
// fewer operations under it: TSan is about 10x slower).
//
// GCC says __SANITIZE_ADDRESS__ (__SANITIZE_THREAD__), clang (the CI's
// sanitizer builds) __has_feature(address_sanitizer) (thread_sanitizer);
// this header hides the difference.
#ifndef FARSWAP_COMMON_SANITIZERS_H_
#define FARSWAP_COMMON_SANITIZERS_H_

// FARSWAP_UNDER_ASAN is defined (as 1) when AddressSanitizer instruments this
// translation unit.
#if defined(__SANITIZE_ADDRESS__)
#define FARSWAP_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FARSWAP_UNDER_ASAN 1
#endif
#endif

// FARSWAP_UNDER_TSAN is defined (as 1) when ThreadSanitizer instruments this
// translation unit.
#if defined(__SANITIZE_THREAD__)
#define FARSWAP_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FARSWAP_UNDER_TSAN 1
#endif
#endif

#endif  // FARSWAP_COMMON_SANITIZERS_H_
