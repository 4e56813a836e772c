// TLS, mutual TLS, bearer-token authentication and the per-client concurrency limit, against a
// real server on loopback. Certificates are made at test time with openssl.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "server/access_control.h"
#include "tests/integration/serving_test_util.h"

namespace moeserve::testing {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, all signed by it.
class Certificates {
 public:
  Certificates() {
    dir_ = std::filesystem::temp_directory_path() / ("moeserve-certs-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    const std::string d = dir_.string();
    const std::string script =
        "set -e; cd " + d +
        ";"
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=moeserve-test-ca "
        "2>/dev/null;"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > san.ext;"
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null;"
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile "
        "san.ext 2>/dev/null;"
        "openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client 2>/dev/null;"
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 2>/dev/null";
    ok_ = std::system(("bash -c \"" + script + "\"").c_str()) == 0;
  }
  ~Certificates() { std::filesystem::remove_all(dir_); }
  bool ok() const { return ok_; }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

 private:
  std::filesystem::path dir_;
  bool ok_ = false;
};

grpc::Status Ping(std::shared_ptr<grpc::Channel> channel, const std::string& token = "") {
  auto stub = v1::Inference::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::GenerateRequest r = TokenRequest({1, 5, 9}, 2);
  v1::GenerateResponse response;
  return stub->Complete(&ctx, r, &response);
}

std::string Target(TestServer& s) { return "localhost:" + std::to_string(s.server().port()); }

TEST(Security, TlsServesEncryptedAndRefusesPlaintext) {
  Certificates certs;
  ASSERT_TRUE(certs.ok()) << "openssl failed";
  TestServer server(
      {"server.tls.cert_file=" + certs.path("server.pem"), "server.tls.key_file=" + certs.path("server.key")});
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = ReadAll(certs.path("ca.pem"));
  EXPECT_TRUE(Ping(grpc::CreateChannel(Target(server), grpc::SslCredentials(tls))).ok());
  EXPECT_FALSE(Ping(grpc::CreateChannel(Target(server), grpc::InsecureChannelCredentials())).ok());
}

TEST(Security, MutualTlsRequiresAClientCertificate) {
  Certificates certs;
  ASSERT_TRUE(certs.ok()) << "openssl failed";
  TestServer server({"server.tls.cert_file=" + certs.path("server.pem"),
                     "server.tls.key_file=" + certs.path("server.key"),
                     "server.tls.client_ca_file=" + certs.path("ca.pem")});
  grpc::SslCredentialsOptions anonymous;
  anonymous.pem_root_certs = ReadAll(certs.path("ca.pem"));
  EXPECT_FALSE(Ping(grpc::CreateChannel(Target(server), grpc::SslCredentials(anonymous))).ok());
  grpc::SslCredentialsOptions with_cert = anonymous;
  with_cert.pem_cert_chain = ReadAll(certs.path("client.pem"));
  with_cert.pem_private_key = ReadAll(certs.path("client.key"));
  EXPECT_TRUE(Ping(grpc::CreateChannel(Target(server), grpc::SslCredentials(with_cert))).ok());
}

TEST(Security, BearerTokenFromEnvironment) {
  ::setenv("MOESERVE_TEST_TOKEN", "s3cret-token", 1);
  TestServer server({"server.auth.token_env=MOESERVE_TEST_TOKEN"});
  auto channel = server.channel();
  EXPECT_EQ(Ping(channel).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Ping(channel, "wrong-token").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Ping(channel, "s3cret-token-longer").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Ping(channel, "s3cret-token").ok());
  ::unsetenv("MOESERVE_TEST_TOKEN");
}

TEST(Security, BearerTokenFromFile) {
  const std::string path = (std::filesystem::temp_directory_path() / "moeserve-test-token").string();
  std::ofstream(path) << "file-token\n";
  TestServer server({"server.auth.token_file=" + path});
  EXPECT_EQ(Ping(server.channel(), "other").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Ping(server.channel(), "file-token").ok());
  std::filesystem::remove(path);
}

TEST(Security, PerClientConcurrencyLimit) {
  TestServer server({"server.max_concurrent_per_client=1", "scheduler.debug_step_delay_ms=5"});
  const int vocab = static_cast<int>(server.Info().vocab_size());
  GenerateResult first;
  std::thread t([&] { first = Generate(server.stub(), TokenRequest(RandomPrompt(6, vocab, 1), 80)); });
  ASSERT_TRUE(WaitForInfo(server, [](const v1::ModelInfo& i) { return i.num_requests_running() == 1; }));
  const GenerateResult second = Generate(server.stub(), TokenRequest(RandomPrompt(6, vocab, 2), 4));
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  t.join();
  EXPECT_TRUE(first.status.ok());
  // The slot is released when the first call is done.
  EXPECT_TRUE(Generate(server.stub(), TokenRequest(RandomPrompt(6, vocab, 3), 4)).status.ok());
}

TEST(Security, ConstantTimeEqualsCompares) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abcd"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
  EXPECT_TRUE(ConstantTimeEquals("", ""));
}

}  // namespace
}  // namespace moeserve::testing
