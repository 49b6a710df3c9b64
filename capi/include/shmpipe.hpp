// shmpipe.hpp: a header-only C++17 wrapper over the C API of shmpipe (shmpipe.h).
//
// Ring, Producer and Consumer own their C handles (move-only; the destructor closes). Failures
// throw shmpipe::Error, which carries the status code (`code()`), the corruption kind and the
// library's message; the `try_` calls report "full" or "empty" in their return value instead
// (false, std::nullopt). A reserved message (Grant) and a lent one (Loan) are RAII objects too:
// a Grant not committed is discarded, a Loan releases its message when destroyed. While one
// lives, its side allows no other call (shmpipe.h, "ZERO COPY"): the bytes of a Loan are
// shared memory a misbehaving peer can rewrite, so read each byte once or copy out what you
// check (`Loan::copy()`).
//
//   auto ring = shmpipe::Ring::open_or_create_key(0x2020);
//   auto tx = ring.producer();
//   tx.send("hello", 5);
//   tx.close();  // the consumer sees the end of stream; throws if it was not clean
//
// Build: c++ -std=c++17 app.cpp $(pkg-config --cflags --libs shmpipe)
#ifndef SHMPIPE_HPP
#define SHMPIPE_HPP

#include <shmpipe.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace shmpipe {

/// A failed call: the C status code, what a peer got wrong (for SHMPIPE_STATUS_CORRUPTED) and
/// the library's message.
class Error : public std::runtime_error {
  public:
    Error(shmpipe_status code, std::string what)
        : std::runtime_error(std::move(what)), code_(code), corruption_(shmpipe_last_corruption()) {}
    /// The status code (SHMPIPE_STATUS_...).
    shmpipe_status code() const noexcept { return code_; }
    /// What a peer got wrong, or SHMPIPE_CORRUPTION_NONE.
    shmpipe_corruption corruption() const noexcept { return corruption_; }

  private:
    shmpipe_status code_;
    shmpipe_corruption corruption_;
};

namespace detail {
/// Throws for anything but SHMPIPE_STATUS_OK.
inline void check(shmpipe_status s, const char *call) {
    if (s != SHMPIPE_STATUS_OK) {
        throw Error(s, std::string(call) + ": " + shmpipe_last_error_message());
    }
}
inline uint64_t nanos(std::chrono::nanoseconds t) {
    return t.count() < 0 ? 0 : static_cast<uint64_t>(t.count());
}
} // namespace detail

class Producer;
class Consumer;

/// Room for one message in the ring, written in place; `commit()` sends it, destruction
/// without a commit discards it.
class Grant {
  public:
    Grant(Grant &&o) noexcept : tx_(std::exchange(o.tx_, nullptr)), data_(o.data_), size_(o.size_) {}
    Grant &operator=(Grant &&o) noexcept {
        if (this != &o) {
            abort();
            tx_ = std::exchange(o.tx_, nullptr);
            data_ = o.data_;
            size_ = o.size_;
        }
        return *this;
    }
    Grant(const Grant &) = delete;
    Grant &operator=(const Grant &) = delete;
    ~Grant() { abort(); }

    /// Where the message's bytes are: `size()` of them, valid until commit or destruction.
    uint8_t *data() const noexcept { return data_; }
    /// The length reserved.
    std::size_t size() const noexcept { return size_; }
    /// Sends the message (its first `len` bytes, at most `size()`).
    void commit(std::size_t len) {
        detail::check(shmpipe_producer_commit(tx_, len), "shmpipe_producer_commit");
        tx_ = nullptr;
    }
    /// Sends the whole message.
    void commit() { commit(size_); }

  private:
    friend class Producer;
    Grant(shmpipe_producer *tx, uint8_t *data, std::size_t size) : tx_(tx), data_(data), size_(size) {}
    void abort() noexcept {
        if (tx_) {
            shmpipe_producer_abort(tx_);
            tx_ = nullptr;
        }
    }
    shmpipe_producer *tx_;
    uint8_t *data_;
    std::size_t size_;
};

/// A message lent in place; its slots go back to the producer when it is destroyed (or
/// `release()`d). The bytes are shared memory: see the file's opening comment.
class Loan {
  public:
    Loan(Loan &&o) noexcept : rx_(std::exchange(o.rx_, nullptr)), data_(o.data_), size_(o.size_) {}
    Loan &operator=(Loan &&o) noexcept {
        if (this != &o) {
            release();
            rx_ = std::exchange(o.rx_, nullptr);
            data_ = o.data_;
            size_ = o.size_;
        }
        return *this;
    }
    Loan(const Loan &) = delete;
    Loan &operator=(const Loan &) = delete;
    ~Loan() { release(); }

    /// Where the message's bytes are: `size()` of them, valid until the release.
    const uint8_t *data() const noexcept { return data_; }
    /// The message's length (validated: the range stays inside the ring).
    std::size_t size() const noexcept { return size_; }
    /// The message copied into private memory, which the peer cannot change.
    std::vector<uint8_t> copy() const { return std::vector<uint8_t>(data_, data_ + size_); }
    /// Gives the message's slots back now.
    void release() noexcept {
        if (rx_) {
            shmpipe_consumer_release(rx_);
            rx_ = nullptr;
        }
    }

  private:
    friend class Consumer;
    Loan(shmpipe_consumer *rx, const uint8_t *data, std::size_t size) : rx_(rx), data_(data), size_(size) {}
    shmpipe_consumer *rx_;
    const uint8_t *data_;
    std::size_t size_;
};

/// The sending side of a ring (one per ring, across processes).
class Producer {
  public:
    Producer(Producer &&o) noexcept : tx_(std::exchange(o.tx_, nullptr)) {}
    Producer &operator=(Producer &&o) noexcept {
        if (this != &o) {
            shmpipe_producer_close(tx_);
            tx_ = std::exchange(o.tx_, nullptr);
        }
        return *this;
    }
    Producer(const Producer &) = delete;
    Producer &operator=(const Producer &) = delete;
    /// Closes as `close()` does, ignoring whether the end was clean.
    ~Producer() { shmpipe_producer_close(tx_); }

    /// Sends a message, waiting for room.
    void send(const void *data, std::size_t len) {
        detail::check(shmpipe_producer_send(tx_, static_cast<const uint8_t *>(data), len),
                      "shmpipe_producer_send");
    }
    /// Sends a message if there is room now; false if the ring is full.
    bool try_send(const void *data, std::size_t len) {
        shmpipe_status s = shmpipe_producer_try_send(tx_, static_cast<const uint8_t *>(data), len);
        if (s == SHMPIPE_STATUS_FULL) {
            return false;
        }
        detail::check(s, "shmpipe_producer_try_send");
        return true;
    }
    /// Sends a message, waiting at most `timeout` for room; false if it passed.
    bool send_for(const void *data, std::size_t len, std::chrono::nanoseconds timeout) {
        shmpipe_status s = shmpipe_producer_send_timeout(
            tx_, static_cast<const uint8_t *>(data), len, detail::nanos(timeout));
        if (s == SHMPIPE_STATUS_TIMEOUT) {
            return false;
        }
        detail::check(s, "shmpipe_producer_send_timeout");
        return true;
    }
    /// Reserves a message of `len` bytes to build in place, waiting for room.
    Grant reserve(std::size_t len) {
        uint8_t *data;
        detail::check(shmpipe_producer_reserve(tx_, len, &data), "shmpipe_producer_reserve");
        return Grant(tx_, data, len);
    }
    /// Reserves a message in place if there is room now.
    std::optional<Grant> try_reserve(std::size_t len) {
        uint8_t *data;
        shmpipe_status s = shmpipe_producer_try_reserve(tx_, len, &data);
        if (s == SHMPIPE_STATUS_FULL) {
            return std::nullopt;
        }
        detail::check(s, "shmpipe_producer_try_reserve");
        return Grant(tx_, data, len);
    }
    /// Opens a batch: `try_send`s are published together at `publish()` or `end_batch()`.
    void begin_batch() { detail::check(shmpipe_producer_batch_begin(tx_), "shmpipe_producer_batch_begin"); }
    /// Publishes the batch so far.
    void publish() { detail::check(shmpipe_producer_batch_publish(tx_), "shmpipe_producer_batch_publish"); }
    /// Publishes and closes the batch.
    void end_batch() { detail::check(shmpipe_producer_batch_end(tx_), "shmpipe_producer_batch_end"); }
    /// The ring's largest message.
    std::size_t max_message() const noexcept { return shmpipe_producer_max_message(tx_); }
    /// Ends the stream; throws if the role could not be given back cleanly.
    void close() {
        shmpipe_status s = shmpipe_producer_close(std::exchange(tx_, nullptr));
        detail::check(s, "shmpipe_producer_close");
    }
    /// The C handle, for calls this wrapper does not cover.
    shmpipe_producer *get() const noexcept { return tx_; }

  private:
    friend class Ring;
    explicit Producer(shmpipe_producer *tx) : tx_(tx) {}
    shmpipe_producer *tx_;
};

/// The receiving side of a ring (one per ring, across processes).
class Consumer {
  public:
    Consumer(Consumer &&o) noexcept : rx_(std::exchange(o.rx_, nullptr)) {}
    Consumer &operator=(Consumer &&o) noexcept {
        if (this != &o) {
            shmpipe_consumer_close(rx_);
            rx_ = std::exchange(o.rx_, nullptr);
        }
        return *this;
    }
    Consumer(const Consumer &) = delete;
    Consumer &operator=(const Consumer &) = delete;
    ~Consumer() { shmpipe_consumer_close(rx_); }

    /// The next message, copied, waiting for it; std::nullopt at the end of stream.
    std::optional<std::vector<uint8_t>> recv() {
        std::vector<uint8_t> buf(max_message());
        std::size_t len = 0;
        shmpipe_status s = shmpipe_consumer_recv(rx_, buf.data(), buf.size(), &len);
        if (s == SHMPIPE_STATUS_DISCONNECTED) {
            return std::nullopt;
        }
        detail::check(s, "shmpipe_consumer_recv");
        buf.resize(len);
        return buf;
    }
    /// The next message into `buf` (`capacity` bytes) if one waits now: its length, or
    /// std::nullopt if the ring is empty. The end of stream throws (SHMPIPE_STATUS_DISCONNECTED).
    std::optional<std::size_t> try_recv(void *buf, std::size_t capacity) {
        std::size_t len = 0;
        shmpipe_status s = shmpipe_consumer_try_recv(rx_, static_cast<uint8_t *>(buf), capacity, &len);
        if (s == SHMPIPE_STATUS_EMPTY) {
            return std::nullopt;
        }
        detail::check(s, "shmpipe_consumer_try_recv");
        return len;
    }
    /// The next message lent in place, waiting for it; std::nullopt at the end of stream.
    std::optional<Loan> lend() {
        const uint8_t *data;
        std::size_t len;
        shmpipe_status s = shmpipe_consumer_lend(rx_, &data, &len);
        if (s == SHMPIPE_STATUS_DISCONNECTED) {
            return std::nullopt;
        }
        detail::check(s, "shmpipe_consumer_lend");
        return Loan(rx_, data, len);
    }
    /// The next message lent in place, waiting at most `timeout`; std::nullopt if it passed.
    /// The end of stream throws (SHMPIPE_STATUS_DISCONNECTED).
    std::optional<Loan> lend_for(std::chrono::nanoseconds timeout) {
        const uint8_t *data;
        std::size_t len;
        shmpipe_status s = shmpipe_consumer_lend_timeout(rx_, detail::nanos(timeout), &data, &len);
        if (s == SHMPIPE_STATUS_TIMEOUT) {
            return std::nullopt;
        }
        detail::check(s, "shmpipe_consumer_lend_timeout");
        return Loan(rx_, data, len);
    }
    /// Opens a batch: the slots of `try_recv`s go back together at `release_batch()` or
    /// `end_batch()`.
    void begin_batch() { detail::check(shmpipe_consumer_batch_begin(rx_), "shmpipe_consumer_batch_begin"); }
    /// Frees the slots of the batch so far.
    void release_batch() { detail::check(shmpipe_consumer_batch_release(rx_), "shmpipe_consumer_batch_release"); }
    /// Frees the batch's slots and closes it.
    void end_batch() { detail::check(shmpipe_consumer_batch_end(rx_), "shmpipe_consumer_batch_end"); }
    /// The ring's largest message: a buffer this large always fits.
    std::size_t max_message() const noexcept { return shmpipe_consumer_max_message(rx_); }
    /// Gives the role back; throws if that was not clean.
    void close() {
        shmpipe_status s = shmpipe_consumer_close(std::exchange(rx_, nullptr));
        detail::check(s, "shmpipe_consumer_close");
    }
    /// The C handle, for calls this wrapper does not cover.
    shmpipe_consumer *get() const noexcept { return rx_; }

  private:
    friend class Ring;
    explicit Consumer(shmpipe_consumer *rx) : rx_(rx) {}
    shmpipe_consumer *rx_;
};

/// A ring; its producer and consumer stay valid after it is destroyed.
class Ring {
  public:
    /// Creates a ring at a SysV key (0: a private segment, reached by shmid).
    static Ring create_key(int32_t key, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_create_key", [&](shmpipe_ring **r) { return shmpipe_ring_create_key(key, cfg, r); });
    }
    /// Opens the ring at a SysV key.
    static Ring open_key(int32_t key, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_open_key", [&](shmpipe_ring **r) { return shmpipe_ring_open_key(key, cfg, r); });
    }
    /// Creates or opens the ring at a SysV key: either side may start first.
    static Ring open_or_create_key(int32_t key, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_open_or_create_key",
                    [&](shmpipe_ring **r) { return shmpipe_ring_open_or_create_key(key, cfg, r); });
    }
    /// Opens a SysV ring by shmid.
    static Ring open_shmid(int32_t shmid, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_open_shmid", [&](shmpipe_ring **r) { return shmpipe_ring_open_shmid(shmid, cfg, r); });
    }
    /// Creates a ring in a new memfd (`memfd()` is its descriptor, to hand over).
    static Ring create_memfd(const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_create_memfd", [&](shmpipe_ring **r) { return shmpipe_ring_create_memfd(cfg, r); });
    }
    /// Opens the ring in a memfd (duplicated: the caller keeps `fd`).
    static Ring open_memfd(int fd, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_open_memfd", [&](shmpipe_ring **r) { return shmpipe_ring_open_memfd(fd, cfg, r); });
    }
    /// Creates a ring file.
    static Ring create_path(const std::string &path, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_create_path",
                    [&](shmpipe_ring **r) { return shmpipe_ring_create_path(path.c_str(), cfg, r); });
    }
    /// Opens a ring file.
    static Ring open_path(const std::string &path, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_open_path",
                    [&](shmpipe_ring **r) { return shmpipe_ring_open_path(path.c_str(), cfg, r); });
    }
    /// Creates or opens a ring file: either side may start first.
    static Ring open_or_create_path(const std::string &path, const shmpipe_config *cfg = nullptr) {
        return make("shmpipe_ring_open_or_create_path",
                    [&](shmpipe_ring **r) { return shmpipe_ring_open_or_create_path(path.c_str(), cfg, r); });
    }

    Ring(Ring &&o) noexcept : ring_(std::exchange(o.ring_, nullptr)) {}
    Ring &operator=(Ring &&o) noexcept {
        if (this != &o) {
            shmpipe_ring_close(ring_);
            ring_ = std::exchange(o.ring_, nullptr);
        }
        return *this;
    }
    Ring(const Ring &) = delete;
    Ring &operator=(const Ring &) = delete;
    ~Ring() { shmpipe_ring_close(ring_); }

    /// Claims the producer role.
    Producer producer() const {
        shmpipe_producer *tx;
        detail::check(shmpipe_ring_producer(ring_, &tx), "shmpipe_ring_producer");
        return Producer(tx);
    }
    /// Claims the consumer role.
    Consumer consumer() const {
        shmpipe_consumer *rx;
        detail::check(shmpipe_ring_consumer(ring_, &rx), "shmpipe_ring_consumer");
        return Consumer(rx);
    }
    /// The ring's shape and place.
    shmpipe_info info() const {
        shmpipe_info i;
        detail::check(shmpipe_ring_info(ring_, &i), "shmpipe_ring_info");
        return i;
    }
    /// The ring's shared counters now.
    shmpipe_stats stats() const {
        shmpipe_stats s;
        detail::check(shmpipe_ring_stats(ring_, &s), "shmpipe_ring_stats");
        return s;
    }
    /// Removes the ring now (attached sides keep working).
    void remove() const { detail::check(shmpipe_ring_remove(ring_), "shmpipe_ring_remove"); }
    /// The C handle, for calls this wrapper does not cover.
    shmpipe_ring *get() const noexcept { return ring_; }

  private:
    explicit Ring(shmpipe_ring *ring) : ring_(ring) {}
    template <typename F> static Ring make(const char *call, F f) {
        shmpipe_ring *ring;
        detail::check(f(&ring), call);
        return Ring(ring);
    }
    shmpipe_ring *ring_;
};

} // namespace shmpipe

#endif // SHMPIPE_HPP
