// What the UCX backend sets on top of UCX's own configuration
// (transport/src/ucx_config.h), read back from the UCP configuration it
// produces: the zero-copy and rendezvous thresholds and shared-memory error
// handling, each
// left to the environment where the operator set it, and the transports of
// TransportOptions::ucx_transports.
#include "ucx_config.h"

#include <gtest/gtest.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucp/api/ucp.h>

#include <optional>
#include <string>
#include <utility>

#include "farswap/transport/transport.h"

namespace farswap::transport {
namespace {

// ScopedEnv sets (or, with nullopt, unsets) one variable for a test and puts
// the old value back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = getenv(name); old != nullptr) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Configured: UCX's configuration from the environment with ConfigureUcx
// applied, as ucp_config_print writes it ("NAME=value" lines).
std::string Configured(const TransportOptions& options, bool rdma_device_present = false) {
  ucp_config_t* config = nullptr;
  EXPECT_EQ(ucp_config_read(nullptr, nullptr, &config), UCS_OK);
  if (config == nullptr) return "";
  absl::Status s = ConfigureUcx(options, config, rdma_device_present);
  EXPECT_TRUE(s.ok()) << s;
  char* text = nullptr;
  size_t size = 0;
  FILE* f = open_memstream(&text, &size);
  ucp_config_print(config, f, nullptr, UCS_CONFIG_PRINT_CONFIG);
  fclose(f);
  ucp_config_release(config);
  std::string out(text, size);
  free(text);
  return "\n" + out;
}

TransportOptions WithTransports(std::string tls) {
  TransportOptions options;
  options.ucx_transports = std::move(tls);
  return options;
}

TEST(UcxConfigTest, OnePageFramesAreCopiedUnlessTheEnvironmentSaysOtherwise) {
  {
    ScopedEnv unset("UCX_ZCOPY_THRESH", std::nullopt);
    EXPECT_NE(
        Configured({}).find(std::string("\nUCX_ZCOPY_THRESH=") + kUcxZeroCopyThreshold + "\n"),
        std::string::npos);
  }
  // ucp_config_modify would override the operator's variable: it must not.
  ScopedEnv set("UCX_ZCOPY_THRESH", "64K");
  std::string out = Configured({});
  EXPECT_NE(out.find("\nUCX_ZCOPY_THRESH=64K\n"), std::string::npos) << out;
}

TEST(UcxConfigTest, FramesGoEagerUnlessVerbsMayCarryThem) {
  ScopedEnv unset("UCX_RNDV_THRESH", std::nullopt);
  ScopedEnv tls("UCX_TLS", std::nullopt);
  // No RDMA device, or transports without verbs: rendezvous only costs a
  // round trip.
  EXPECT_NE(Configured(WithTransports("tcp")).find("\nUCX_RNDV_THRESH=inf\n"), std::string::npos);
  EXPECT_NE(Configured({}).find("\nUCX_RNDV_THRESH=inf\n"), std::string::npos);
  EXPECT_NE(Configured(WithTransports("sm,tcp"), true).find("\nUCX_RNDV_THRESH=inf\n"),
            std::string::npos);
  EXPECT_NE(Configured(WithTransports("^ib"), true).find("\nUCX_RNDV_THRESH=inf\n"),
            std::string::npos);
  // Verbs may carry frames: UCX's own choice stays.
  for (const char* verbs : {"", "rc,sm,self", "rc_mlx5,tcp", "dc", "ud_v", "ib", "^tcp", "all"}) {
    std::string out = Configured(WithTransports(verbs), true);
    EXPECT_NE(out.find("\nUCX_RNDV_THRESH=auto\n"), std::string::npos) << verbs << out;
  }
  ScopedEnv set("UCX_RNDV_THRESH", "16K");
  std::string out = Configured(WithTransports("tcp"));
  EXPECT_NE(out.find("\nUCX_RNDV_THRESH=16K\n"), std::string::npos) << out;
}

TEST(UcxConfigTest, MayUseVerbsReadsTheTransportList) {
  ScopedEnv tls("UCX_TLS", std::nullopt);
  EXPECT_TRUE(MayUseVerbs({}));
  EXPECT_TRUE(MayUseVerbs(WithTransports("rc,sm,self")));
  EXPECT_FALSE(MayUseVerbs(WithTransports("tcp")));
  EXPECT_FALSE(MayUseVerbs(WithTransports("sm,tcp,self")));
  EXPECT_FALSE(MayUseVerbs(WithTransports("^ib")));
  EXPECT_TRUE(MayUseVerbs(WithTransports("^sm")));
  ScopedEnv env_tls("UCX_TLS", "tcp,cma");
  EXPECT_FALSE(MayUseVerbs({}));
}

TEST(UcxConfigTest, SharedMemoryGetsErrorHandlingOnlyWhereItMayBeUsed) {
  ScopedEnv unset("UCX_MM_ERROR_HANDLING", std::nullopt);
  ScopedEnv tls("UCX_TLS", std::nullopt);
  EXPECT_NE(Configured(WithTransports("sm,tcp")).find("\nMM_ERROR_HANDLING=y\n"),
            std::string::npos);
  std::string tcp_only = Configured(WithTransports("tcp"));
  EXPECT_EQ(tcp_only.find("MM_ERROR_HANDLING"), std::string::npos) << tcp_only;
  EXPECT_NE(tcp_only.find("\nUCX_TLS=tcp\n"), std::string::npos) << tcp_only;
  EXPECT_EQ(Configured(WithTransports("^sm")).find("MM_ERROR_HANDLING"), std::string::npos);
  {
    ScopedEnv operator_says("UCX_MM_ERROR_HANDLING", "n");
    EXPECT_EQ(Configured(WithTransports("sm,tcp")).find("MM_ERROR_HANDLING=y"), std::string::npos);
  }
}

}  // namespace
}  // namespace farswap::transport
