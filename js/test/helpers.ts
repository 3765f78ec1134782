// Small helpers shared by the unit tests.

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The settled state of `promise` after the pending microtasks ran, without waiting for it. */
export async function settled(promise: Promise<unknown>): Promise<"pending" | "fulfilled" | "rejected"> {
  let result: "pending" | "fulfilled" | "rejected" = "pending";
  promise.then(
    () => (result = "fulfilled"),
    () => (result = "rejected"),
  );
  await sleep(0);
  return result;
}
