#include "chaos_workload.h"

#include <setjmp.h>
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "farswap/common/page_file.h"

namespace farswap::chaos {
namespace {

constexpr uint64_t kMagic = 0x6661727377617021;  // "farswap!"

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9;
  x = (x ^ (x >> 27)) * 0x94d049bb133111eb;
  return x ^ (x >> 31);
}

bool Transient(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kResourceExhausted ||
         s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kCancelled;
}

// SIGBUS handling for the region workload: a worker arms its jump buffer
// around each region access; the handler jumps back there. A SIGBUS on an
// unarmed thread is a real crash: restore the default action and return, so
// the access faults again and the process dies of it.
thread_local sigjmp_buf* armed_jump = nullptr;

void OnSigbus(int) {
  sigjmp_buf* jump = armed_jump;
  if (jump == nullptr) {
    signal(SIGBUS, SIG_DFL);
    return;
  }
  armed_jump = nullptr;
  siglongjmp(*jump, 1);
}

}  // namespace

WorkloadCounters& WorkloadCounters::operator+=(const WorkloadCounters& o) {
  operations += o.operations;
  pages_verified += o.pages_verified;
  data_loss_errors += o.data_loss_errors;
  wrong_data += o.wrong_data;
  transient_errors += o.transient_errors;
  store_errors += o.store_errors;
  sigbus += o.sigbus;
  lost_pages += o.lost_pages;
  unverified_at_end += o.unverified_at_end;
  return *this;
}

WorkloadCounters operator-(WorkloadCounters a, const WorkloadCounters& b) {
  a.operations -= b.operations;
  a.pages_verified -= b.pages_verified;
  a.data_loss_errors -= b.data_loss_errors;
  a.wrong_data -= b.wrong_data;
  a.transient_errors -= b.transient_errors;
  a.store_errors -= b.store_errors;
  a.sigbus -= b.sigbus;
  a.lost_pages -= b.lost_pages;
  a.unverified_at_end -= b.unverified_at_end;
  return a;
}

void ChaosPage(uint64_t page, uint64_t version, uint8_t* out) {
  uint64_t* w = reinterpret_cast<uint64_t*>(out);
  constexpr size_t kWords = kPageSize / 8;
  w[0] = kMagic;
  w[1] = page;
  w[2] = version;
  const uint64_t seed = Mix(page * 0x100000001b3 ^ version);
  for (size_t i = 3; i < kWords / 2; ++i) w[i] = Mix(seed + i);
  for (size_t i = kWords / 2; i < kWords; ++i) w[i] = seed + (i % 8);
}

void PageLedger::Count(uint64_t WorkloadCounters::*field, uint64_t n) {
  MutexLock l(&mu_);
  counters_.*field += n;
}

void PageLedger::Failure(uint64_t i, bool wrong_bytes) {
  MutexLock l(&mu_);
  counters_.data_loss_errors++;
  if (wrong_bytes) counters_.wrong_data++;
  if (!lost_[i]) {
    lost_[i] = 1;
    counters_.lost_pages++;
  }
}

void PageLedger::WrongBytes(uint64_t i, uint64_t key, uint64_t expected, const uint8_t* got) {
  Failure(i, /*wrong_bytes=*/true);
  uint64_t header[3];
  std::memcpy(header, got, sizeof header);
  std::string what =
      header[0] == kMagic
          ? absl::StrCat("page ", key, ": read page ", header[1], " version ", header[2],
                         ", expected version ", expected)
          : absl::StrCat("page ", key, ": read bytes that are no version of any page (expected ",
                         "version ", expected, ", first word ", absl::Hex(header[0]), ")");
  constexpr size_t kKeep = 10;
  MutexLock l(&mu_);
  if (examples_.size() < kKeep) examples_.push_back(std::move(what));
}

std::vector<std::string> PageLedger::wrong_data_examples() const {
  MutexLock l(&mu_);
  return examples_;
}

WorkloadCounters PageLedger::counters() const {
  MutexLock l(&mu_);
  return counters_;
}

// ---- ClientWorkload ----

ClientWorkload::ClientWorkload(Client* client, const ClientWorkloadOptions& options)
    : client_(client), options_(options), ledger_(options.pages) {}

ClientWorkload::~ClientWorkload() { Stop(); }

void ClientWorkload::Start() {
  for (int t = 0; t < options_.threads; ++t) threads_.emplace_back([this, t] { Run(t); });
}

void ClientWorkload::Stop() {
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void ClientWorkload::LoadAndCheck(uint64_t i, uint8_t* buf, uint8_t* expected, bool* transient) {
  *transient = false;
  ledger_.Count(&WorkloadCounters::operations);
  absl::Status s = client_->Load(options_.first_page + i, buf);
  if (s.ok()) {
    ChaosPage(options_.first_page + i, ledger_.version(i), expected);
    if (std::memcmp(buf, expected, kPageSize) == 0) {
      ledger_.Count(&WorkloadCounters::pages_verified);
    } else {
      ledger_.WrongBytes(i, options_.first_page + i, ledger_.version(i), buf);
    }
  } else if (Transient(s)) {
    ledger_.Count(&WorkloadCounters::transient_errors);
    *transient = true;
  } else {  // DATA_LOSS, NOT_FOUND for a stored page, anything else
    ledger_.Failure(i, /*wrong_bytes=*/false);
  }
}

void ClientWorkload::Run(int thread) {
  std::mt19937_64 rng(options_.seed * 7919 + uint64_t(thread));
  std::vector<uint8_t> buf(kPageSize), expected(kPageSize);
  const uint64_t n = options_.threads;
  const uint64_t mine = (options_.pages - uint64_t(thread) + n - 1) / n;
  std::uniform_real_distribution<double> coin(0, 1);
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint64_t i = uint64_t(thread) + n * (rng() % mine);
    if (ledger_.version(i) == 0 || ledger_.doubt(i) || coin(rng) < options_.store_fraction) {
      const uint64_t v = ledger_.version(i) + 1;
      ChaosPage(options_.first_page + i, v, buf.data());
      ledger_.Count(&WorkloadCounters::operations);
      absl::Status s = client_->Store(options_.first_page + i, buf.data());
      ledger_.version(i) = v;
      ledger_.doubt(i) = !s.ok();
      if (!s.ok()) ledger_.Count(&WorkloadCounters::store_errors);
    } else {
      bool transient;
      LoadAndCheck(i, buf.data(), expected.data(), &transient);
    }
  }
}

void ClientWorkload::VerifyAll(absl::Duration patience) {
  std::vector<uint8_t> buf(kPageSize), expected(kPageSize);
  for (uint64_t i = 0; i < options_.pages; ++i) {
    if (ledger_.version(i) == 0) continue;
    if (ledger_.doubt(i)) {
      ledger_.Count(&WorkloadCounters::unverified_at_end);
      continue;
    }
    const absl::Time give_up = absl::Now() + patience;
    bool transient = true;
    while (transient) {
      LoadAndCheck(i, buf.data(), expected.data(), &transient);
      if (transient && absl::Now() > give_up) {
        ledger_.Failure(i, false);  // still unreadable after the faults healed
        break;
      }
      if (transient) absl::SleepFor(absl::Milliseconds(200));
    }
  }
}

// ---- RegionWorkload ----

RegionWorkload::RegionWorkload(Region* region, const RegionWorkloadOptions& options)
    : region_(region),
      options_(options),
      pages_(region->size() / kPageSize),
      ledger_(region->size() / kPageSize) {}

RegionWorkload::~RegionWorkload() { Stop(); }

void RegionWorkload::Start() {
  struct sigaction sa {};
  sa.sa_handler = OnSigbus;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGBUS, &sa, nullptr);
  for (int t = 0; t < options_.threads; ++t) threads_.emplace_back([this, t] { Run(t); });
}

void RegionWorkload::Stop() {
  stop_ = true;
  for (auto& t : threads_) t.join();
  threads_.clear();
}

bool RegionWorkload::Access(uint64_t i, uint8_t* buf, bool write) {
  uint8_t* page = region_->data() + i * kPageSize;
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    ledger_.Count(&WorkloadCounters::sigbus);
    return false;
  }
  armed_jump = &jump;
  if (write) {
    std::memcpy(page, buf, kPageSize);
  } else {
    std::memcpy(buf, page, kPageSize);
  }
  armed_jump = nullptr;
  return true;
}

void RegionWorkload::ReadAndCheck(uint64_t i, uint8_t* buf, uint8_t* expected) {
  ledger_.Count(&WorkloadCounters::operations);
  if (!Access(i, buf, /*write=*/false)) {
    ledger_.Failure(i, false);
    return;
  }
  if (ledger_.doubt(i)) return;
  if (ledger_.version(i) == 0) {
    std::memset(expected, 0, kPageSize);
  } else {
    ChaosPage(i, ledger_.version(i), expected);
  }
  if (std::memcmp(buf, expected, kPageSize) == 0) {
    ledger_.Count(&WorkloadCounters::pages_verified);
  } else {
    ledger_.WrongBytes(i, i, ledger_.version(i), buf);
  }
}

void RegionWorkload::Run(int thread) {
  std::mt19937_64 rng(options_.seed * 104729 + uint64_t(thread));
  std::vector<uint8_t> buf(kPageSize), expected(kPageSize);
  const uint64_t n = options_.threads;
  const uint64_t mine = (pages_ - uint64_t(thread) + n - 1) / n;
  std::uniform_real_distribution<double> coin(0, 1);
  while (!stop_.load(std::memory_order_relaxed)) {
    const uint64_t i = uint64_t(thread) + n * (rng() % mine);
    if (coin(rng) < options_.write_fraction) {
      const uint64_t v = ledger_.version(i) + 1;
      ChaosPage(i, v, buf.data());
      ledger_.Count(&WorkloadCounters::operations);
      if (Access(i, buf.data(), /*write=*/true)) {
        ledger_.version(i) = v;
        ledger_.doubt(i) = 0;
      } else {
        ledger_.doubt(i) = 1;  // possibly written in part
        ledger_.Failure(i, false);
      }
    } else {
      ReadAndCheck(i, buf.data(), expected.data());
    }
  }
}

void RegionWorkload::VerifyAll() {
  std::vector<uint8_t> buf(kPageSize), expected(kPageSize);
  for (uint64_t i = 0; i < pages_; ++i) {
    if (ledger_.version(i) == 0) continue;
    if (ledger_.doubt(i)) {
      ledger_.Count(&WorkloadCounters::unverified_at_end);
      continue;
    }
    ReadAndCheck(i, buf.data(), expected.data());
  }
  signal(SIGBUS, SIG_DFL);
}

}  // namespace farswap::chaos
