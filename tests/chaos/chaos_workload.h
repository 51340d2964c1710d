// chaos_workload.h: workloads that verify every page they read while faults
// come and go: one drives farswap::Client directly (Store/Load of its own
// pages), the other touches a far-memory Region with loads and stores.
//
//   ClientWorkload cw(client, {.first_page = 1ull << 40, .pages = 4096, .threads = 2});
//   RegionWorkload rw(region, {.threads = 1});
//   cw.Start(); rw.Start();  ...faults...  cw.Stop(); rw.Stop();
//   cw.VerifyAll(); rw.VerifyAll();            // every page read back once more
//   WorkloadCounters c = cw.counters() + rw.counters();
//
// Expected contents. Every page is owned by one worker thread, which keeps
// the version it last wrote; a page's bytes are a function of (page, version)
// (ChaosPage), so a read is checked by regenerating them. A Client store
// that fails leaves the page in doubt (old, new or no copy): it is not
// checked again until a later store of it succeeds. A Region write cut
// short by SIGBUS leaves it in doubt until it is written whole again.
//
// What counts as a failure (data_loss_errors): a read that returns bytes
// other than the last acknowledged version, DATA_LOSS, or NOT_FOUND for a
// stored page; and, in the region, SIGBUS (counted as sigbus). UNAVAILABLE
// and DEADLINE_EXCEEDED while a fault lasts are counted, not failures: the
// page is read again later, and VerifyAll (after the faults are healed)
// retries them for a while. lost_pages: distinct pages with a failure.
//
// Thread safety: Start/Stop/VerifyAll from one thread; counters() from any.
#ifndef FARSWAP_TESTS_CHAOS_CHAOS_WORKLOAD_H_
#define FARSWAP_TESTS_CHAOS_CHAOS_WORKLOAD_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "farswap/client/client.h"
#include "farswap/client/region.h"
#include "farswap/common/mutex.h"

namespace farswap::chaos {

struct WorkloadCounters {
  uint64_t operations = 0;      // loads, stores, region reads and writes issued
  uint64_t pages_verified = 0;  // reads whose bytes were checked and matched
  uint64_t data_loss_errors = 0;
  uint64_t wrong_data = 0;         // of which: bytes that did not match
  uint64_t transient_errors = 0;   // UNAVAILABLE / DEADLINE_EXCEEDED reads (retried later)
  uint64_t store_errors = 0;       // Client stores that failed (page in doubt until rewritten)
  uint64_t sigbus = 0;             // region accesses answered with SIGBUS
  uint64_t lost_pages = 0;         // distinct pages with a failure
  uint64_t unverified_at_end = 0;  // pages in doubt at the end, not checked
  WorkloadCounters& operator+=(const WorkloadCounters& o);
};
WorkloadCounters operator-(WorkloadCounters a, const WorkloadCounters& b);

// ChaosPage writes the 4 KiB contents of (page, version): a header naming
// both, a pseudo-random half and a repetitive half (so it compresses).
void ChaosPage(uint64_t page, uint64_t version, uint8_t* out);

// PageLedger: the versions of a set of pages and the counters about them.
class PageLedger {
 public:
  explicit PageLedger(uint64_t pages) : version_(pages, 0), doubt_(pages, 0), lost_(pages, 0) {}
  // Only the page's owning thread reads or writes its entries.
  uint64_t& version(uint64_t i) { return version_[i]; }
  uint8_t& doubt(uint64_t i) { return doubt_[i]; }
  void Count(uint64_t WorkloadCounters::*field, uint64_t n = 1);
  // Failure counts a data-loss failure of page i (lost_pages once per page).
  void Failure(uint64_t i, bool wrong_bytes);
  // WrongBytes counts a read of page i that returned `got` instead of
  // version `expected`, and keeps a few descriptions (what the bytes were).
  void WrongBytes(uint64_t i, uint64_t key, uint64_t expected, const uint8_t* got);
  WorkloadCounters counters() const;
  std::vector<std::string> wrong_data_examples() const;

 private:
  std::vector<uint64_t> version_;
  std::vector<uint8_t> doubt_, lost_;
  mutable Mutex mu_;
  WorkloadCounters counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> examples_ ABSL_GUARDED_BY(mu_);
};

struct ClientWorkloadOptions {
  uint64_t first_page = 1ull << 40;  // clear of the region's page numbers
  uint64_t pages = 4096;
  int threads = 2;
  double store_fraction = 0.4;
  uint64_t seed = 1;
};

class ClientWorkload {
 public:
  ClientWorkload(Client* client, const ClientWorkloadOptions& options);
  ~ClientWorkload();
  void Start();
  void Stop();
  // VerifyAll loads every stored page, retrying transient errors for up to
  // `patience` per page.
  void VerifyAll(absl::Duration patience);
  WorkloadCounters counters() const { return ledger_.counters(); }
  std::vector<std::string> wrong_data_examples() const { return ledger_.wrong_data_examples(); }

 private:
  void Run(int thread);
  void LoadAndCheck(uint64_t i, uint8_t* buf, uint8_t* expected, bool* transient);

  Client* const client_;
  const ClientWorkloadOptions options_;
  PageLedger ledger_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

struct RegionWorkloadOptions {
  int threads = 1;
  double write_fraction = 0.3;
  uint64_t seed = 2;
};

// RegionWorkload installs a SIGBUS handler while it runs (Start to
// VerifyAll's end): a SIGBUS on a region access of a worker thread is
// counted and the access abandoned (siglongjmp); any other SIGBUS aborts.
class RegionWorkload {
 public:
  RegionWorkload(Region* region, const RegionWorkloadOptions& options);
  ~RegionWorkload();
  void Start();
  void Stop();
  void VerifyAll();
  WorkloadCounters counters() const { return ledger_.counters(); }
  std::vector<std::string> wrong_data_examples() const { return ledger_.wrong_data_examples(); }

 private:
  void Run(int thread);
  // Access copies between the region's page i and buf; false after SIGBUS.
  bool Access(uint64_t i, uint8_t* buf, bool write);
  void ReadAndCheck(uint64_t i, uint8_t* buf, uint8_t* expected);

  Region* const region_;
  const RegionWorkloadOptions options_;
  const uint64_t pages_;
  PageLedger ledger_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

}  // namespace farswap::chaos

#endif  // FARSWAP_TESTS_CHAOS_CHAOS_WORKLOAD_H_
