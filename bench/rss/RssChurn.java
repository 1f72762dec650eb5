/*
 * The JVM side of issue 3: native memory churned by many Java threads, as a
 * service's NIO and compression code does, then an idle JVM. The C workload
 * (bench/demo.c) has the same shape without the JVM around it.
 *
 * In phases: start T threads; each allocates direct buffers
 * (ByteBuffer.allocateDirect: malloc, zeroed, so every page is touched),
 * sizes 1 KiB .. 256 KiB log-uniform, up to its share of the phase's
 * budget; runs a few Deflater/Inflater round trips (zlib's state and window
 * are malloc'd too); then churns: frees a random half and allocates again,
 * a few rounds. At exit it keeps --keep percent of its buffers, chosen at
 * random, and frees the rest. Buffers are freed at once (Unsafe's
 * invokeCleaner), not whenever the GC gets to them, so the native memory in
 * use is known: the live bytes are the capacities of the kept buffers.
 * Then all threads end, the next phase starts new ones, and after the last
 * the JVM sleeps --idle seconds: no allocation of ours at all.
 *
 * When the work ends it prints, flushed, for bench/rss/run:
 *   work_end baseline_kib=.. live_bytes=.. held_peak_bytes=.. work_s=..
 * (baseline: VmRSS before the work, with the JVM started and its heap
 * touched; run it with -Xms = -Xmx and -XX:+AlwaysPreTouch. held_peak: the
 * most native bytes the program held at once, so that peak RSS - baseline
 * - held_peak is what the allocator, zlib and the JVM added at the peak.)
 *
 * Options: --threads T --phases P --rounds R --budget-mib M (in flight per
 *          phase) --keep PCT --idle S --seed N --sizes exact|pages (requests
 *          as drawn, or rounded up to whole 4 KiB pages)
 * Run:     java -Xms64m -Xmx64m -XX:+AlwaysPreTouch -XX:MaxDirectMemorySize=1g RssChurn
 */

import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.DataFormatException;
import java.util.zip.Deflater;
import java.util.zip.Inflater;

public final class RssChurn {
    private static final double MIB = 1024.0 * 1024.0;
    private static final int NAP_MS = 10; // a thread's wait between rounds
    private static final int ZLIB_TRIPS = 2; // Deflater/Inflater round trips a round

    private static int threads = 64, phases = 10, rounds = 8, idleS = 10;
    private static double budgetMib = 256, keepPct = 1.5;
    private static long seed = 42;
    private static boolean pageSizes;

    private static final List<ByteBuffer> kept = new ArrayList<>();
    private static long keptBytes;
    /* Native bytes the program holds (kept + in flight) and the most it
     * held at once: what a perfect allocator's peak RSS adds to the
     * baseline, but for zlib's state and the JVM's own mallocs. */
    private static final AtomicLong held = new AtomicLong(), heldPeak = new AtomicLong();

    private static ByteBuffer allocate(int size) {
        ByteBuffer b = ByteBuffer.allocateDirect(size);
        long now = held.addAndGet(b.capacity());
        for (long p = heldPeak.get(); now > p && !heldPeak.compareAndSet(p, now); p = heldPeak.get())
            ;
        return b;
    }

    /* sun.misc.Unsafe.invokeCleaner, found by reflection: javac then has no
     * internal API to warn about. */
    private static Object unsafe;
    private static Method invokeCleaner;

    private static void free(ByteBuffer b) {
        try {
            invokeCleaner.invoke(unsafe, b);
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
        held.addAndGet(-b.capacity());
    }

    private static synchronized void keep(ByteBuffer b) {
        kept.add(b);
        keptBytes += b.capacity();
    }

    private static long rssKib(String field) {
        try {
            for (String line : Files.readAllLines(Paths.get("/proc/self/status"))) {
                if (line.startsWith(field + ":"))
                    return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        } catch (IOException e) {
            // not Linux: report 0
        }
        return 0;
    }

    /* As many 1-2 KiB requests as 128-256 KiB ones; with --sizes pages,
     * rounded up to whole 4 KiB pages (what an allocator's size rounding
     * costs is then nearly nothing: compare a run with and without). */
    private static int randSize(SplittableRandom r) {
        int base = 1 << (10 + r.nextInt(8));
        int n = base + r.nextInt(base);
        return pageSizes ? (n + 4095) & ~4095 : n;
    }

    /* Compress and decompress a buffer of 4-64 KiB, half of it repeats. */
    private static void zlibTrip(SplittableRandom r) {
        byte[] in = new byte[4096 + r.nextInt(60 * 1024)];
        for (int i = 0; i < in.length; i++)
            in[i] = (byte) (i < in.length / 2 ? r.nextInt(256) : i & 63);
        Deflater d = new Deflater(1 + r.nextInt(9));
        byte[] packed = new byte[in.length + 1024];
        d.setInput(in);
        d.finish();
        int len = 0;
        while (!d.finished())
            len += d.deflate(packed, len, packed.length - len);
        d.end();
        Inflater inf = new Inflater();
        inf.setInput(packed, 0, len);
        byte[] out = new byte[in.length];
        try {
            int got = 0;
            while (!inf.finished())
                got += inf.inflate(out, got, out.length - got);
            if (got != in.length || out[in.length - 1] != in[in.length - 1])
                throw new IllegalStateException("zlib round trip lost data");
        } catch (DataFormatException e) {
            throw new IllegalStateException(e);
        } finally {
            inf.end();
        }
    }

    private static void work(int phase, int id) {
        SplittableRandom r = new SplittableRandom(seed ^ ((long) phase << 32) ^ id);
        long budget = (long) (budgetMib * MIB / threads), bytes = 0;
        List<ByteBuffer> obj = new ArrayList<>();
        for (int round = 0; round < rounds; round++) {
            while (bytes < budget) {
                ByteBuffer b = allocate(randSize(r));
                obj.add(b);
                bytes += b.capacity();
            }
            for (int i = 0; i < ZLIB_TRIPS; i++)
                zlibTrip(r);
            if (round + 1 == rounds)
                break;
            try {
                Thread.sleep(NAP_MS); // as a handler waits on I/O
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            List<ByteBuffer> stay = new ArrayList<>(obj.size());
            for (ByteBuffer b : obj) {
                if (r.nextBoolean()) {
                    free(b);
                    bytes -= b.capacity();
                } else {
                    stay.add(b);
                }
            }
            obj = stay;
        }
        for (ByteBuffer b : obj) {
            if (r.nextDouble() * 100.0 < keepPct)
                keep(b);
            else
                free(b);
        }
    }

    private static void runPhase(int phase) throws InterruptedException {
        Thread[] t = new Thread[threads];
        for (int i = 0; i < threads; i++) {
            final int id = i;
            t[i] = new Thread(() -> work(phase, id), "churn-" + phase + "-" + i);
            t[i].start();
        }
        for (Thread x : t)
            x.join();
    }

    private static void parse(String[] args) {
        for (int i = 0; i + 1 < args.length; i += 2) {
            String v = args[i + 1];
            switch (args[i]) {
            case "--threads": threads = Integer.parseInt(v); break;
            case "--phases": phases = Integer.parseInt(v); break;
            case "--rounds": rounds = Integer.parseInt(v); break;
            case "--budget-mib": budgetMib = Double.parseDouble(v); break;
            case "--keep": keepPct = Double.parseDouble(v); break;
            case "--idle": idleS = Integer.parseInt(v); break;
            case "--seed": seed = Long.parseLong(v); break;
            case "--sizes":
                if (!v.equals("exact") && !v.equals("pages"))
                    throw new IllegalArgumentException("--sizes: exact or pages, not " + v);
                pageSizes = v.equals("pages");
                break;
            default: throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (args.length % 2 != 0 || threads < 1 || phases < 1 || rounds < 1 || budgetMib <= 0)
            throw new IllegalArgumentException("usage: RssChurn [--threads T] [--phases P] [--rounds R]"
                                               + " [--budget-mib M] [--keep PCT] [--idle S] [--seed N]"
                                               + " [--sizes exact|pages]");
    }

    public static void main(String[] args) throws Exception {
        parse(args);
        Class<?> c = Class.forName("sun.misc.Unsafe");
        Field f = c.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        unsafe = f.get(null);
        invokeCleaner = c.getMethod("invokeCleaner", ByteBuffer.class);
        String preload = System.getenv("LD_PRELOAD");
        System.out.printf("RssChurn: %d phases x %d threads, %.0f MiB in flight per phase, %.1f%% kept, "
                          + "allocator %s%n", phases, threads, budgetMib, keepPct,
                          preload == null || preload.isEmpty() ? "glibc (no LD_PRELOAD)" : preload);
        long baseline = rssKib("VmRSS");
        long t0 = System.nanoTime();
        for (int ph = 0; ph < phases; ph++) {
            runPhase(ph);
            System.out.printf("phase %2d/%d at %5.1f s: rss %7.1f MiB, kept %6.1f MiB%n", ph + 1, phases,
                              (System.nanoTime() - t0) * 1e-9, rssKib("VmRSS") / 1024.0, keptBytes / MIB);
        }
        double workS = (System.nanoTime() - t0) * 1e-9;
        System.out.printf("work_end baseline_kib=%d live_bytes=%d held_peak_bytes=%d work_s=%.3f%n", baseline,
                          keptBytes, heldPeak.get(), workS);
        System.out.flush();
        Thread.sleep(idleS * 1000L);
        System.out.printf("after %d s idle: rss %.1f MiB, peak %.1f MiB, live %.1f MiB in %d buffers%n", idleS,
                          rssKib("VmRSS") / 1024.0, rssKib("VmHWM") / 1024.0, keptBytes / MIB, kept.size());
        for (ByteBuffer b : kept)
            free(b);
    }
}
