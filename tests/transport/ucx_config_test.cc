// What the UCX backend sets on top of UCX's own configuration
// (transport/src/ucx_config.h), read back from the UCP configuration it
// produces: the zero-copy threshold and shared-memory error handling, each
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
std::string Configured(const TransportOptions& options) {
  ucp_config_t* config = nullptr;
  EXPECT_EQ(ucp_config_read(nullptr, nullptr, &config), UCS_OK);
  if (config == nullptr) return "";
  absl::Status s = ConfigureUcx(options, config);
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
