// A C++ producer or consumer of a shmpipe ring at a SysV key, through the RAII wrapper
// shmpipe.hpp (either side may start first):
//
//   pipe_cpp send KEY COUNT    sends COUNT messages, then closes (the end of stream)
//   pipe_cpp recv KEY COUNT    receives until the end of stream and checks there were COUNT
//
// Message i is the text "message <i>" followed by (i % 50) bytes of 'x'. The sender builds
// every other message in place (Producer::reserve, Grant::commit); the receiver reads every
// other one in place (Consumer::lend; Loan::copy() takes it out of the peer's reach before
// it is checked).
//
// Build: c++ -std=c++17 pipe.cpp $(pkg-config --cflags --libs shmpipe) -o pipe_cpp
#include <shmpipe.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static std::string message(unsigned long i) {
    return "message " + std::to_string(i) + std::string(i % 50, 'x');
}

static int run(const char *mode, int32_t key, unsigned long count) {
    shmpipe_config cfg{};
    cfg.slot_size = 64;  // 64 slots of 64 bytes:
    cfg.slot_count = 64; // small, full and empty often
    cfg.flags = SHMPIPE_JOIN_ANY_SHAPE;
    auto ring = shmpipe::Ring::open_or_create_key(key, &cfg);
    if (std::strcmp(mode, "send") == 0) {
        auto tx = ring.producer();
        for (unsigned long i = 0; i < count; i++) {
            std::string m = message(i);
            if (i % 2 == 0) {
                tx.send(m.data(), m.size());
            } else {
                shmpipe::Grant g = tx.reserve(m.size());
                std::memcpy(g.data(), m.data(), m.size());
                g.commit();
            }
        }
        tx.close(); // throws unless the stream ended cleanly
    } else {
        auto rx = ring.consumer();
        unsigned long i = 0;
        for (;; i++) {
            std::string got;
            if (i % 2 == 0) {
                auto m = rx.recv();
                if (!m) {
                    break; // the end of stream
                }
                got.assign(m->begin(), m->end());
            } else {
                auto loan = rx.lend();
                if (!loan) {
                    break;
                }
                auto bytes = loan->copy(); // private now: the peer cannot change it
                got.assign(bytes.begin(), bytes.end());
            }
            if (got != message(i)) {
                std::fprintf(stderr, "pipe_cpp: message %lu is \"%s\"\n", i, got.c_str());
                return 1;
            }
        }
        if (i != count) {
            std::fprintf(stderr, "pipe_cpp: received %lu messages, expected %lu\n", i, count);
            return 1;
        }
        rx.close();
    }
    std::printf("%s %lu messages\n", mode, count);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4 || (std::strcmp(argv[1], "send") != 0 && std::strcmp(argv[1], "recv") != 0)) {
        std::fprintf(stderr, "usage: pipe_cpp send|recv KEY COUNT\n");
        return 2;
    }
    try {
        return run(argv[1], static_cast<int32_t>(std::strtoll(argv[2], nullptr, 0)),
                   std::strtoul(argv[3], nullptr, 0));
    } catch (const shmpipe::Error &e) {
        std::fprintf(stderr, "pipe_cpp: %s (status %d)\n", e.what(), static_cast<int>(e.code()));
        return 1;
    }
}
