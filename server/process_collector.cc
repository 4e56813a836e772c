#include "server/process_collector.h"

#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

namespace moeserve {
namespace {

prometheus::MetricFamily Single(const std::string& name, const std::string& help, prometheus::MetricType type,
                                double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

int CountOpenFds() {
  int n = 0;
  if (DIR* dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr) ++n;
    closedir(dir);
    n -= 3;  // ".", "..", and the directory's own descriptor
  }
  return n;
}

}  // namespace

ProcessCollector::ProcessCollector()
    : start_time_seconds_(std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()) {}

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  double virtual_pages = 0, resident_pages = 0;
  std::ifstream("/proc/self/statm") >> virtual_pages >> resident_pages;
  // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks; the command name
  // (field 2) may hold spaces, so parse after its closing parenthesis.
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  double cpu_seconds = 0;
  const size_t close = stat.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(stat.substr(close + 2));
    std::string field;
    double utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stod(field);
      if (i == 15) stime = std::stod(field);
    }
    cpu_seconds = (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  using prometheus::MetricType;
  return {
      Single("process_resident_memory_bytes", "Resident memory size in bytes.", MetricType::Gauge,
             resident_pages * page),
      Single("process_virtual_memory_bytes", "Virtual memory size in bytes.", MetricType::Gauge, virtual_pages * page),
      Single("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", MetricType::Counter,
             cpu_seconds),
      Single("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
             MetricType::Gauge, start_time_seconds_),
      Single("process_open_fds", "Number of open file descriptors.", MetricType::Gauge, CountOpenFds()),
  };
}

}  // namespace moeserve
