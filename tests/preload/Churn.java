// A JVM service's native-memory churn, for running under ebbmalloc:
// DirectByteBuffers of many sizes (malloc'ed by the JVM, freed by its
// Cleaner after GC) and java.util.zip Deflater/Inflater (zlib's malloc'ed
// state), on many threads at once. Every buffer and every round trip is
// checked; any mismatch, any exception, or ebbmalloc missing from
// /proc/self/maps exits non-zero.
//
//   java Churn [threads] [iterations per thread]

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.zip.CRC32;
import java.util.zip.DataFormatException;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public final class Churn {
    private static final AtomicInteger failures = new AtomicInteger();
    private static final AtomicInteger directRetries = new AtomicInteger();

    private static void fail(String what) {
        System.err.println("Churn: " + what);
        failures.incrementAndGet();
    }

    private static int sizeFor(SplittableRandom rng) {
        // Log-uniform from 1 byte to 4 MiB.
        int bits = rng.nextInt(22);
        return (1 << bits) + rng.nextInt(1 << bits);
    }

    private static long crc(byte[] b, int off, int len) {
        CRC32 c = new CRC32();
        c.update(b, off, len);
        return c.getValue();
    }

    // JDK 17's G1 turns System.gc() into nothing while a thread is in a JNI
    // critical region (zlib's arrays, in zip() below), and
    // Bits.reserveMemory then gives up after half a second of waiting with
    // "Cannot reserve ... direct buffer memory", though most of the direct
    // memory is garbage whose Cleaners a full GC would run. That is the
    // JVM's doing, not the allocator's (the JVM counts direct memory itself,
    // before it calls malloc): wait for a real GC, 60 s at most.
    private static ByteBuffer allocateDirect(int size) throws InterruptedException {
        long deadline = System.nanoTime() + 60_000_000_000L;
        for (;;) {
            try {
                return ByteBuffer.allocateDirect(size);
            } catch (OutOfMemoryError e) {
                if (!String.valueOf(e.getMessage()).contains("direct buffer memory")
                        || System.nanoTime() > deadline)
                    throw e;
                directRetries.incrementAndGet();
                System.gc();
                Thread.sleep(10);
            }
        }
    }

    // Fill a direct buffer and check it; keep up to 16 small ones alive for a
    // while and check them again later. The rest become garbage at once, for
    // the Cleaner to free after a GC (which the direct memory limit forces).
    private static void directBuffers(SplittableRandom rng, int iterations)
            throws InterruptedException {
        List<ByteBuffer> kept = new ArrayList<>();
        List<Long> seeds = new ArrayList<>();
        for (int i = 0; i < iterations; i++) {
            int size = sizeFor(rng);
            ByteBuffer buf = allocateDirect(size);
            long seed = rng.nextLong();
            fill(buf, seed);
            if (!check(buf, seed))
                fail("direct buffer of " + size + " bytes changed at once");
            if (size > 64 * 1024)
                continue;
            if (kept.size() < 16) {
                kept.add(buf);
                seeds.add(seed);
            } else {
                int k = rng.nextInt(kept.size());
                if (!check(kept.get(k), seeds.get(k)))
                    fail("kept direct buffer of " + kept.get(k).capacity() + " bytes changed");
                kept.set(k, buf);
                seeds.set(k, seed);
            }
        }
        for (int k = 0; k < kept.size(); k++)
            if (!check(kept.get(k), seeds.get(k)))
                fail("kept direct buffer changed before release");
    }

    private static void fill(ByteBuffer buf, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        buf.clear();
        while (buf.remaining() >= 8)
            buf.putLong(r.nextLong());
        while (buf.hasRemaining())
            buf.put((byte) r.nextInt());
    }

    private static boolean check(ByteBuffer buf, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        ByteBuffer b = buf.duplicate();
        b.clear();
        while (b.remaining() >= 8)
            if (b.getLong() != r.nextLong())
                return false;
        while (b.hasRemaining())
            if (b.get() != (byte) r.nextInt())
                return false;
        return true;
    }

    // Compress and decompress random and repetitive data; compare checksums.
    private static void zip(SplittableRandom rng, int iterations) throws DataFormatException {
        for (int i = 0; i < iterations; i++) {
            int size = 1 + rng.nextInt(256 * 1024);
            byte[] data = new byte[size];
            if (i % 2 == 0) {
                rng.nextBytes(data);
            } else {
                byte[] word = ("ebbmalloc-" + rng.nextInt(1000) + ";").getBytes();
                for (int j = 0; j < size; j++)
                    data[j] = word[j % word.length];
            }
            long expect = crc(data, 0, size);

            Deflater def = new Deflater(rng.nextInt(10), i % 3 == 0);
            def.setInput(data);
            def.finish();
            byte[] packed = new byte[size + size / 100 + 64];
            int plen = 0;
            while (!def.finished()) {
                if (plen == packed.length)
                    packed = java.util.Arrays.copyOf(packed, packed.length * 2);
                plen += def.deflate(packed, plen, packed.length - plen);
            }
            // Ending explicitly frees zlib's state now; otherwise the
            // Cleaner frees it on another thread, later. Do both.
            if (i % 4 != 3)
                def.end();

            Inflater inf = new Inflater(i % 3 == 0);
            inf.setInput(packed, 0, plen);
            byte[] out = new byte[size];
            int olen = 0;
            while (!inf.finished() && olen < size) {
                int n = inf.inflate(out, olen, size - olen);
                if (n == 0 && (inf.needsInput() || inf.needsDictionary()))
                    break; // truncated stream: caught by the length check
                olen += n;
            }
            if (i % 4 != 3)
                inf.end();
            if (olen != size || crc(out, 0, olen) != expect)
                fail("zip round trip of " + size + " bytes differs");
        }
    }

    private static boolean ebbmallocMapped() throws Exception {
        return Files.readAllLines(Paths.get("/proc/self/maps")).stream()
                .anyMatch(l -> l.contains("libebbmalloc.so"));
    }

    public static void main(String[] args) throws Exception {
        int threads = args.length > 0 ? Integer.parseInt(args[0]) : 16;
        int iterations = args.length > 1 ? Integer.parseInt(args[1]) : 400;
        if (!ebbmallocMapped()) {
            System.err.println("Churn: libebbmalloc.so is not mapped into the JVM");
            System.exit(2);
        }
        List<Thread> ts = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final long seed = 1000 + t;
            Thread th = new Thread(() -> {
                SplittableRandom rng = new SplittableRandom(seed);
                try {
                    directBuffers(rng, iterations);
                    zip(rng, iterations / 4);
                } catch (Throwable e) {
                    fail("thread " + seed + ": " + e);
                }
            });
            ts.add(th);
            th.start();
        }
        for (Thread th : ts)
            th.join();
        System.gc(); // run the Cleaners of what is left, before exit
        if (failures.get() != 0) {
            System.err.println("Churn: " + failures.get() + " failures");
            System.exit(1);
        }
        System.out.println("Churn: " + threads + " threads x " + iterations + " iterations passed ("
                + directRetries.get() + " direct buffers waited for a full GC)");
    }
}
