// The JVM's own ways of asking the allocator to give memory back, as an
// operator uses them: `jcmd PID System.trim_native_heap` and
// -XX:TrimNativeHeapInterval both call malloc_trim(0). Run by jvm_trim.py,
// which measures the RSS from outside.
//
// Threads allocate direct buffers of 1-256 KiB (malloc'ed by the JVM and
// zeroed, so every page is resident) up to a budget, keep one in KEEP
// scattered among the rest, each filled with its own pattern, and free the
// rest at once (the Cleaner, called directly). Then the program prints
//   ready freed_bytes=.. live_bytes=..
// and waits for lines on stdin: "check" verifies every kept buffer and
// answers "ok" (or exits 1 naming the buffer); end of input exits 0.
//
//   java NativeTrim THREADS BUDGET_MIB KEEP

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicLong;

public final class NativeTrim {
    private static final List<ByteBuffer> kept = new ArrayList<>();
    private static final List<Long> seeds = new ArrayList<>();
    private static final AtomicLong freed = new AtomicLong();
    private static Object unsafe;
    private static Method invokeCleaner;

    private static void fill(ByteBuffer b, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i + 8 <= b.capacity(); i += 8)
            b.putLong(i, r.nextLong());
    }

    private static boolean check(ByteBuffer b, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        for (int i = 0; i + 8 <= b.capacity(); i += 8)
            if (b.getLong(i) != r.nextLong())
                return false;
        return true;
    }

    private static void free(ByteBuffer b) throws ReflectiveOperationException {
        invokeCleaner.invoke(unsafe, b);
    }

    private static void work(int id, long budget, int keep) throws ReflectiveOperationException {
        SplittableRandom r = new SplittableRandom(0x7e1aL * 31 + id);
        List<ByteBuffer> mine = new ArrayList<>();
        for (long bytes = 0; bytes < budget;) {
            int base = 1 << (10 + r.nextInt(8));
            ByteBuffer b = ByteBuffer.allocateDirect(base + r.nextInt(base));
            bytes += b.capacity();
            mine.add(b);
        }
        // Free only once all are allocated: the kept ones then sit among
        // freed neighbours, as long-lived buffers do in a service.
        for (ByteBuffer b : mine) {
            if (r.nextInt(keep) == 0) {
                long seed = r.nextLong();
                fill(b, seed);
                synchronized (kept) {
                    kept.add(b);
                    seeds.add(seed);
                }
            } else {
                freed.addAndGet(b.capacity());
                free(b);
            }
        }
    }

    public static void main(String[] args) throws Exception {
        int threads = Integer.parseInt(args[0]);
        long budget = Long.parseLong(args[1]) * 1024 * 1024 / threads;
        int keep = Integer.parseInt(args[2]);
        Class<?> uc = Class.forName("sun.misc.Unsafe");
        Field f = uc.getDeclaredField("theUnsafe");
        f.setAccessible(true);
        unsafe = f.get(null);
        invokeCleaner = uc.getMethod("invokeCleaner", ByteBuffer.class);

        Thread[] t = new Thread[threads];
        Throwable[] err = new Throwable[threads];
        for (int i = 0; i < threads; i++) {
            final int id = i;
            t[i] = new Thread(() -> {
                try {
                    work(id, budget, keep);
                } catch (Throwable e) {
                    err[id] = e;
                }
            });
            t[i].start();
        }
        for (int i = 0; i < threads; i++) {
            t[i].join();
            if (err[i] != null)
                throw new IllegalStateException("thread " + i, err[i]);
        }
        long live = 0;
        for (ByteBuffer b : kept)
            live += b.capacity();
        System.out.println("ready freed_bytes=" + freed.get() + " live_bytes=" + live);
        System.out.flush();

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null;) {
            if (!line.equals("check"))
                continue;
            for (int i = 0; i < kept.size(); i++) {
                if (!check(kept.get(i), seeds.get(i))) {
                    System.out.println("buffer " + i + " of " + kept.size() + " ("
                                       + kept.get(i).capacity() + " bytes) changed");
                    System.exit(1);
                }
            }
            System.out.println("ok " + kept.size());
            System.out.flush();
        }
    }
}
